"""Data ready for training: splits assigned, features computed (cached) for every usable row, labels encoded by
the task's kind, and the DataLoaders (length-bucketed batches) over them."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from ..data.dataset import FeatureSet, compute_features, subtract_group_means
from ..data.manifest import Manifest
from ..data.splits import assign_splits
from ..devices import default_device
from ..errors import BadFilesError, SpecrnnError
from ..files import atomic_write_text
from ..tasks import encode, label_kind, label_names, with_task


@dataclass
class Prepared:
    """A manifest with splits, its features, and the class list (from the training rows)."""

    manifest: Manifest
    classes: list[str]
    sets: dict[str, FeatureSet]
    task_kind: str  # the config's task.kind, or the one its labels gave where it said auto


def prepare_data(man: Manifest, cfg: Config, run_dir: Path | None = None, log=print) -> Prepared:
    """Assign splits, compute (cached) features for every row, handle unusable files per `data.on_error`."""
    cfg = with_task(cfg, man.labels)  # task.kind: auto (API callers) is read from the labels, once
    kind = label_kind(cfg.task)
    split_seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
    man = assign_splits(man, cfg.data.val_fraction, cfg.data.test_fraction, split_seed, warn=log,
                        group_val=cfg.data.group_val, stratify=kind != "sequence")
    t0 = time.perf_counter()
    feats, errors = compute_features(man.paths, cfg.features, cfg.data.cache_dir, default_device())
    if errors:
        if run_dir is not None:
            write_bad_files(run_dir / "bad_files.csv", errors)
        if cfg.data.on_error == "stop":
            raise BadFilesError(errors, "Training stopped before it started. Fix or remove them, or pass --on-error skip.")
        log(f"skipping {len(errors)} unusable file(s); list in {run_dir / 'bad_files.csv' if run_dir else 'the log'}")
    keep = [i for i, f in enumerate(feats) if f is not None]
    man = man.select(keep)
    feats = [feats[i] for i in keep]
    if cfg.model.normalize == "group":  # every row's group mean, test groups' included: their unlabelled audio enrols them
        feats = subtract_group_means(man, feats)
        log(f"normalisation: each of {len(set(man.groups))} groups (speakers) minus its own mean features, held-out groups' "
            "from their audio too (no labels read), then training statistics")
    assert man.splits is not None
    classes = label_names([lab for lab, s in zip(man.labels, man.splits) if s == "train"], kind)
    unseen = sorted(set(label_names([lab for lab, s in zip(man.labels, man.splits) if s != "train"], kind)) - set(classes))
    if unseen:
        raise SpecrnnError(f"label(s) {', '.join(map(repr, unseen))} appear in val/test but not in the training split")
    if len(classes) < 2:
        raise SpecrnnError(f"need at least 2 classes in the training split, found {len(classes)}")
    sets = {}
    train_groups = sorted({g for g, s in zip(man.groups, man.splits) if s == "train"}) if man.groups else []
    group_index = {g: i for i, g in enumerate(train_groups)}
    for name in ("train", "val", "test"):
        rows = [i for i, s in enumerate(man.splits) if s == name]
        groups = np.array([group_index[man.groups[i]] for i in rows]) if name == "train" and train_groups else None
        sets[name] = FeatureSet([feats[i] for i in rows], encode([man.labels[i] for i in rows], classes, kind),
                                [man.paths[i] for i in rows], groups=groups)
    if cfg.train.adversary > 0 and len(train_groups) < 2:
        hint = ("" if not man.groups or not cfg.data.group_val else
                "; validation takes whole groups (data.group_val: true), so with few groups set data.group_val: false")
        raise SpecrnnError(f"train.adversary needs a 'group' column with at least 2 groups (speakers) in the training split, "
                           f"found {len(train_groups)}{hint}")
    log(f"features: {len(man)} clips ready in {time.perf_counter() - t0:.1f} s (train {len(sets['train'])}, "
        f"val {len(sets['val'])}, test {len(sets['test'])}; {len(classes)} {'tokens' if kind == 'sequence' else 'classes'})")
    if not len(sets["val"]):
        raise SpecrnnError("the validation split is empty: add data or raise data.val_fraction")
    return Prepared(man, classes, sets, cfg.task.kind)


def write_bad_files(path: Path, errors) -> None:
    """bad_files.csv: each unusable file and why (written atomically)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    w.writerows([(e.path, e.reason) for e in errors])
    atomic_write_text(path, buf.getvalue())


def make_loader(fs: FeatureSet, cfg: Config, train: bool):
    from torch.utils.data import DataLoader

    from ..data.batching import BucketBatchSampler, FeatureDataset, collate

    sampler = BucketBatchSampler(fs.lengths, cfg.train.batch_size if train else 64, shuffle=train, bucket=cfg.data.bucket,
                                 seed=cfg.seed)
    groups = fs.groups if train and cfg.train.adversary > 0 else None
    return DataLoader(FeatureDataset(fs.features, fs.targets, groups), batch_sampler=sampler, collate_fn=collate, num_workers=0)
