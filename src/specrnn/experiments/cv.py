"""Cross-validation: one training per fold and seed, test = the fold, validation carved from the other folds only.

Folds come from a column (ESC-10's official `fold`, or any column such as the speaker), from stratified
(group-aware) K-fold, or leave-one-group-out. Each run is an ordinary run folder, so an interrupted CV resumes
at the first unfinished run (finished runs are kept, a half-trained one resumes from its checkpoint).
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from ..config import load_config
from ..data.dataset import check_groups
from ..data.manifest import Manifest, load_manifest
from ..recipe import resolve
from ..errors import SpecrnnError
from ..devices import auto_jobs
from ..files import CHECKPOINT_FILE, MODEL_FILE, atomic_write_text, write_json
from ..tasks import label_kind, task_of_metrics
from .jobs import TrainJob, run_jobs
from .cv_summary import fold_test_probabilities, format_summary, read_metrics, seed_ensemble, summarize, write_tables

__all__ = ["cv", "fold_ids", "fold_manifest", "with_training_rows", "fold_test_probabilities", "seed_ensemble"]


def fold_ids(man: Manifest, fold_column: str | None = None, folds: int | None = None, leave_one_group_out: bool = False,
             seed: int = 0, stratify: bool = True) -> list[str]:
    """The test fold of every row. `stratify=False` for labels that are token sequences (CTC), nearly all distinct."""
    if leave_one_group_out:
        if man.groups is None:
            raise SpecrnnError(f"{man.source}: --leave-one-group-out needs a 'group' column (or --group-column)")
        return list(man.groups)
    if fold_column is None and folds is None and man.folds is not None:
        fold_column = "fold"
    if fold_column is not None:
        col = _column(man, fold_column)
        if len(set(col)) < 2:
            raise SpecrnnError(f"{man.source}: column '{fold_column}' has fewer than 2 distinct folds")
        return list(col)
    k = folds or 5
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    idx = np.arange(len(man))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if man.groups is not None:
            if len(set(man.groups)) < k:
                raise SpecrnnError(f"{man.source}: {len(set(man.groups))} groups cannot make {k} group-aware folds"
                                   + ("" if folds else " (5 is the default: pass --folds K or --leave-one-group-out)"))
            kfold = StratifiedGroupKFold(k, shuffle=True, random_state=seed) if stratify else GroupKFold(k, shuffle=True, random_state=seed)
            splits = kfold.split(idx, man.labels, man.groups)
        else:
            kfold = StratifiedKFold(k, shuffle=True, random_state=seed) if stratify else KFold(k, shuffle=True, random_state=seed)
            splits = kfold.split(idx, man.labels)
        out = [""] * len(man)
        try:
            for f, (_, test) in enumerate(splits, start=1):
                for i in test:
                    out[i] = str(f)
        except ValueError as e:
            raise SpecrnnError(f"{man.source}: cannot make {k} {'stratified ' if stratify else ''}folds: {e}") from None
    return out


def _column(man: Manifest, name: str) -> list[str]:
    col = {"fold": man.folds, "group": man.groups, "label": man.labels, "split": man.splits}.get(name, man.extra.get(name))
    if col is None:
        raise SpecrnnError(f"{man.source}: no column '{name}' (columns: {', '.join(man.columns())})")
    return list(col)


def fold_manifest(man: Manifest, ids: list[str], fold: str) -> Manifest:
    """Rows of `fold` become test, all others train (validation is carved from them later); no group may cross."""
    out = man.select(list(range(len(man))))
    out.splits = ["test" if f == fold else "train" for f in ids]
    if out.groups is not None:
        test_groups = {g for g, s in zip(out.groups, out.splits) if s == "test"}
        train_groups = {g for g, s in zip(out.groups, out.splits) if s == "train"}
        shared = sorted(test_groups & train_groups)
        if shared:
            raise SpecrnnError(f"fold {fold}: group(s) {', '.join(shared[:5])} would be in both train and test")
    return out


def cv(
    data: str | Path,
    out: str | Path,
    config=None,
    overrides: list[str] | None = None,
    fold_column: str | None = None,
    folds: int | None = None,
    leave_one_group_out: bool = False,
    group_column: str | None = None,
    seeds: list[int] = (0,),
    jobs: int | None = None,
    train_extra: str | Path | None = None,
    log=print,
) -> dict:
    """Run the cross-validation into `out` and return (and write) cv.json's summary. `train_extra` (a manifest or
    folder) adds its rows to every fold's training part, never to validation or test: synthetic or out-of-domain
    audio that should help training but must not be scored."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise SpecrnnError(f"seeds must be distinct and at least one, got {seeds}")
    if folds is not None and folds < 2:
        raise SpecrnnError(f"--folds must be at least 2, got {folds}")
    out = Path(out)
    man = load_manifest(data)
    if group_column:
        man.groups = _column(man, group_column)
    cfg, _ = resolve(man, config, overrides, log)  # no --config: the recipe chooses from the data
    sequences = label_kind(cfg.task) == "sequence"
    check_groups(man, cfg)  # before the folder and its folds are made
    extra = _extra_rows(train_extra, man, cfg, group_column) if train_extra is not None else None
    out.mkdir(parents=True, exist_ok=True)
    if man.splits is not None and fold_column != "split":
        log("note: DATA's split column is not used: cv makes its own test folds (and validation from each fold's "
            "training part); --fold-column split would make its splits the folds")
    man = _usable_rows(man, cfg, out, log)
    if extra is not None:
        extra = _usable_rows(extra, cfg, out, log, "bad_files_train_extra.csv")
    ids = fold_ids(man, fold_column, folds, leave_one_group_out, cfg.seed, stratify=not sequences)
    fold_names = sorted(set(ids), key=lambda f: (0, int(f), f) if f.isdigit() else (1, 0, f))  # 1, 2, 10; then names
    _check_validation_groups(man, ids, fold_names, cfg)
    cfg_path = out / "config.yaml"
    if cfg_path.exists() and load_config(str(cfg_path)).to_dict() != cfg.to_dict():
        if _any_trained(out):  # resuming must not mix two experiments in one folder
            raise SpecrnnError(f"{out} holds a cross-validation with another config ({cfg_path}); choose another --out "
                               "or rerun with the same config to resume it")
        # an earlier command stopped before any fold trained: the folder takes the new settings
        log(f"{out}: no fold had trained yet; its settings are replaced by this command's")
        for d in out.glob("fold-*/seed-*"):
            if d.is_dir():
                shutil.rmtree(d)
        for stale in [cfg_path, out / "protocol.txt", *out.glob("fold-*/data.csv")]:
            stale.unlink(missing_ok=True)
    if not cfg_path.exists():
        atomic_write_text(cfg_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    protocol = ("leave-one-group-out" if leave_one_group_out else f"column '{fold_column or 'fold'}'"
                if (fold_column or (folds is None and man.folds is not None))
                else f"{'' if sequences else 'stratified '}{'group-aware ' if man.groups is not None else ''}{folds or 5}-fold")
    _check_protocol(out, protocol + (f", groups from column '{group_column}'" if group_column else "")
                    + (f", training rows added from {Path(train_extra).resolve()}" if extra is not None else ""), fold_names)
    if extra is not None:
        log(f"every fold also trains on {len(extra)} rows of {train_extra} (never validated or tested on); validation is "
            "carved once per fold from DATA's training rows")
    runs = []
    for fold in fold_names:
        fm = fold_manifest(man, ids, fold)
        if extra is not None:
            fm = with_training_rows(fm, extra, cfg, sequences)
        csv_path = out / f"fold-{fold}" / "data.csv"
        if not csv_path.exists():
            fm.to_csv(csv_path)
        elif load_manifest(csv_path).columns() != fm.columns():
            raise SpecrnnError(f"{out}: fold '{fold}' has other rows than this data gives it ({csv_path}); "
                               "choose another --out for other data")
        for seed in seeds:
            runs.append((fold, seed, csv_path, out / f"fold-{fold}" / f"seed-{seed}"))
    log(f"cross-validation: {len(fold_names)} folds ({protocol}) x {len(seeds)} seed(s) = {len(runs)} runs into {out}")
    todo = [r for r in runs if not (r[3] / "metrics.json").is_file()]
    if len(todo) < len(runs):
        log(f"resuming: {len(runs) - len(todo)} run(s) already finished")
    jobs = jobs or auto_jobs(len(todo))
    # parallel runs share the cores: torch's default (all of them, where a GPU trains) would oversubscribe them
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 2) // jobs))
    t0 = time.perf_counter()
    where = {}
    for fold, seed, csv_path, run_dir in todo:
        resume = (run_dir / "config.yaml").is_file() and (run_dir / "run.json").is_file()
        job = TrainJob(f"fold {fold} seed {seed}", str(run_dir), str(run_dir.parent / f"seed-{seed}.log"),
                       None if resume else str(csv_path), None if resume else str(cfg_path), seed, resume)
        where[job] = (fold, seed, run_dir)

    def done(job: TrainJob) -> None:
        fold, seed, run_dir = where[job]
        t = read_metrics(run_dir)["test"]
        log(f"  fold {fold} seed {seed}: {task_of_metrics(t).score_line(t)} ({time.perf_counter() - t0:.0f} s elapsed)")

    run_jobs(list(where), jobs, threads, done)
    summary = summarize(runs, fold_names, protocol)
    summary["config"] = cfg.to_dict()
    if extra is not None:
        summary["train_extra"] = {"path": str(train_extra), "rows": len(extra)}
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "cv.json", summary)
    write_tables(out, summary)
    log(format_summary(summary, out))
    return summary


def _extra_rows(path: str | Path, man: Manifest, cfg, group_column: str | None) -> Manifest:
    """The --train-extra manifest, checked against DATA: known labels, its own groups where DATA has groups, and no
    file or group shared with DATA (either would put the same audio or speaker on both sides of a fold)."""
    extra = load_manifest(path)
    if group_column and man.groups is not None:
        extra.groups = _column(extra, group_column)
    where = f"--train-extra {path}"
    if not len(extra):
        raise SpecrnnError(f"{where}: no rows")
    unknown = sorted(set(extra.labels) - set(man.labels))
    if unknown and label_kind(cfg.task) != "sequence":
        raise SpecrnnError(f"{where}: label(s) {', '.join(map(repr, unknown[:5]))} are not among DATA's labels; cv would "
                           "train classes it never tests")
    if man.groups is not None:
        if extra.groups is None:
            raise SpecrnnError(f"{where}: no '{group_column or 'group'}' column, but DATA has groups (e.g. speakers): give "
                               f"each extra row its group (columns: {', '.join(extra.columns())})")
        shared = sorted(set(extra.groups) & set(man.groups))
        if shared:
            raise SpecrnnError(f"{where}: group(s) {', '.join(shared[:5])} are also in DATA, where they are tested; give "
                               "the extra rows groups of their own")
        check_groups(extra, cfg)
    same = sorted(set(map(os.path.realpath, extra.paths)) & set(map(os.path.realpath, man.paths)))
    if same:
        raise SpecrnnError(f"{where}: {len(same)} file(s) are also in DATA, e.g. {same[0]}: they would be trained on "
                           "and tested")
    return extra


def with_training_rows(fm: Manifest, extra: Manifest, cfg, sequences: bool) -> Manifest:
    """A fold's manifest with validation carved from its own training rows (as `train` would), then `extra`'s rows
    appended as training rows, so that they never reach validation."""
    from ..data.splits import assign_splits

    seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
    fm = assign_splits(fm, cfg.data.val_fraction, 0.0, seed, group_val=cfg.data.group_val, stratify=not sequences)
    k = len(extra)
    return Manifest(
        fm.paths + extra.paths, fm.labels + extra.labels, fm.splits + ["train"] * k,
        None if fm.groups is None else fm.groups + list(extra.groups or [""] * k),  # _extra_rows checked them
        None if fm.folds is None else fm.folds + [""] * k,
        {c: v + extra.extra.get(c, [""] * k) for c, v in fm.extra.items()},
        fm.source,
    )


def _usable_rows(man: Manifest, cfg, out: Path, log, bad_csv: str = "bad_files.csv") -> Manifest:
    """Decode every file once, before folds are made (this also fills the feature store the runs read): unusable
    files stop the CV (data.on_error: stop) or are dropped before stratification (skip), listed in bad_files.csv."""
    from ..data.dataset import compute_features
    from ..errors import BadFilesError
    from ..training.prepare import write_bad_files

    feats, errors = compute_features(man.paths, cfg.features, cfg.data.cache_dir, desc="reading audio")
    if not errors:
        return man
    write_bad_files(out / bad_csv, errors)
    if cfg.data.on_error == "stop":
        raise BadFilesError(errors, "Cross-validation stopped before any training. Fix or remove them, or pass "
                            "--set data.on_error=skip to leave them out of every fold.")
    log(f"skipping {len(errors)} unusable file(s) before making folds; list in {out / bad_csv}")
    return man.select([i for i, f in enumerate(feats) if f is not None])


def _any_trained(out: Path) -> bool:
    """Whether any run of a CV folder has a model or a checkpoint."""
    return any((d / f).exists() for d in out.glob("fold-*/seed-*") for f in (MODEL_FILE, CHECKPOINT_FILE))


def _check_validation_groups(man: Manifest, ids, fold_names: list[str], cfg) -> None:
    """Before any output: with group-aware validation (data.group_val), every fold must leave at least two groups
    for training and validation, else its training would stop at the split."""
    from ..data.splits import check_validation_groups

    if cfg.data.group_val and man.groups is not None:
        for fold in fold_names:
            check_validation_groups({g for g, f in zip(man.groups, ids) if f != fold},
                                    f"{man.source or 'data'}: with fold '{fold}' held out")


def _check_protocol(out: Path, protocol: str, fold_names: list[str]) -> None:
    """A CV folder holds one protocol: resuming with another (or other folds) would mix two experiments."""
    path = out / "protocol.txt"
    old = path.read_text().strip() if path.is_file() else None
    if old is not None and old == protocol.replace("group-aware ", ""):  # written before the label said so
        atomic_write_text(path, protocol + "\n")
        old = protocol
    stray = sorted(p.name.removeprefix("fold-") for p in out.glob("fold-*") if p.name.removeprefix("fold-") not in fold_names)
    if (old is not None and old != protocol) or stray:
        was = f"a {old} cross-validation" if old else f"folds this command does not make ({', '.join(stray[:5])})"
        raise SpecrnnError(f"{out} holds {was}; this command asks for {protocol}. Choose another --out, or rerun the "
                           "command that made it to resume it")
    if old is None:
        atomic_write_text(path, protocol + "\n")
