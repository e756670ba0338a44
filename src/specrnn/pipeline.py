"""The main jobs end to end, shared by the CLI and the Python API:
data -> splits -> cached features -> model -> Lightning training -> run folder -> evaluation."""
from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .config import Config, config_from_dict, load_config
from .data.dataset import FeatureSet, check_groups, compute_features, model_input_set, subtract_group_means
from .data.manifest import Manifest, load_manifest
from .data.splits import assign_splits
from .errors import BadFilesError, Interrupted, SpecrnnError
from .run import MODEL_FILE, atomic_write_text, write_json
from .tasks import encode, label_kind, label_names

SPLIT_FILE = "split.csv"
RUN_DIR_ENV = "SPECRNN_RUN_DIR"


def _ddp_worker() -> bool:
    """True in the extra processes of a multi-process (DDP) run: local rank > 0 or another node."""
    return RUN_DIR_ENV in os.environ and (int(os.environ.get("LOCAL_RANK", 0)) > 0 or int(os.environ.get("NODE_RANK", 0)) > 0)


@dataclass
class Prepared:
    """A manifest with splits, its features, and the class list (from the training rows)."""

    manifest: Manifest
    classes: list[str]
    sets: dict[str, FeatureSet]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _set_threads(cfg: Config) -> None:
    """CPU threads: the configured number, else half the cores (at most 4). On the 2-core reference machine one
    thread beat two for every RNN we measured unless OpenMP spin-waits, which hurts anything sharing the cores."""
    import torch

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    elif not torch.cuda.is_available():
        torch.set_num_threads(max(1, min(4, (os.cpu_count() or 2) // 2)))


def prepare_data(man: Manifest, cfg: Config, run_dir: Path | None = None, log=print) -> Prepared:
    """Assign splits, compute (cached) features for every row, handle unusable files per `data.on_error`."""
    kind = label_kind(cfg.model)
    split_seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
    man = assign_splits(man, cfg.data.val_fraction, cfg.data.test_fraction, split_seed, warn=log,
                        group_val=cfg.data.group_val, stratify=kind != "sequence")
    t0 = time.perf_counter()
    feats, errors = compute_features(man.paths, cfg.features, cfg.data.cache_dir, _device())
    if errors:
        if run_dir is not None:
            _write_bad_files(run_dir / "bad_files.csv", errors)
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
    return Prepared(man, classes, sets)


def _write_bad_files(path: Path, errors) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    w.writerows([(e.path, e.reason) for e in errors])
    atomic_write_text(path, buf.getvalue())


def _loader(fs: FeatureSet, cfg: Config, train: bool):
    from torch.utils.data import DataLoader

    from .data.batching import BucketBatchSampler, FeatureDataset, collate

    sampler = BucketBatchSampler(fs.lengths, cfg.train.batch_size if train else 64, shuffle=train, bucket=cfg.data.bucket,
                                 seed=cfg.seed)
    groups = fs.groups if train and cfg.train.adversary > 0 else None
    return DataLoader(FeatureDataset(fs.features, fs.targets, groups), batch_sampler=sampler, collate_fn=collate, num_workers=0)


def train(
    data: str | Path | None = None,
    out: str | Path | None = None,
    config: str | Path | dict | Config | None = None,
    overrides: list[str] | dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log=print,
    seeds: list[int] | None = None,
) -> dict:
    """Train a model and write its run folder; returns the metrics dict (also in metrics.json).

    `seeds`: one run per seed on one split, the best-validated kept (specrnn.seeds)."""
    t_start = time.perf_counter()
    run_dir = Path(out) if out else Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    from .run import CHECKPOINT_FILE, load_checkpoint_file, read_run_info

    if _ddp_worker():  # a process Lightning's DDP launcher started: join the run folder rank 0 has set up
        run_dir = Path(os.environ[RUN_DIR_ENV])
        cfg_dict, info = read_run_info(run_dir)
        cfg, data = config_from_dict(cfg_dict), info["data"]
    elif resume:
        given = [name for name, v in (("DATA", data), ("--config", config), ("--set/--on-error/--max-epochs", overrides),
                                      ("--overwrite", overwrite), ("--seeds", seeds)) if v]
        if given:
            raise SpecrnnError(f"--resume continues a run with the data and config it started with; {', '.join(given)} "
                               "cannot change it (give only --resume --out RUN, or start a new run)")
        cfg_dict, info = read_run_info(run_dir)
        cfg = config_from_dict(cfg_dict)
        data = info["data"]
        if info.get("seeds"):
            from .seeds import train_seeds

            log(f"resuming {run_dir}: seeds {', '.join(map(str, info['seeds']))}")
            return train_seeds(data, run_dir, cfg, info["seeds"], resume=True, log=log)
        if (run_dir / CHECKPOINT_FILE).exists():  # corrupt, truncated or unsafe: a clear error before any work
            log(f"resuming {run_dir} after epoch {load_checkpoint_file(run_dir / CHECKPOINT_FILE)['epoch'] + 1}")
        else:
            log(f"{run_dir} has no checkpoint (interrupted during its first epoch): training it from the start")
    else:
        cfg = load_config(config, overrides)
        if data is None:
            from .demo import make_demo

            data = make_demo()
            log(f"no DATA given: using the built-in demo data set (8 synthetic sound-event classes) in {data}")
        data = str(Path(data).resolve())
        check_groups(load_manifest(data), cfg)  # fail on bad DATA before anything is written
        if run_dir.exists() and not run_dir.is_dir():
            raise SpecrnnError(f"--out {run_dir}: a file is there, not a folder; choose another --out")
        if run_dir.exists() and any(run_dir.iterdir()):
            if not _made_by_specrnn(run_dir):
                # only folders specrnn made are ever deleted: --out . or --out ~ must not wipe anything
                raise SpecrnnError(f"--out {run_dir}: this folder holds files and is not a specrnn run folder; "
                                   "choose a new or empty folder")
            trained = any((d / p).exists() for d in [run_dir, *run_dir.glob("seeds/seed-*")] for p in (MODEL_FILE, CHECKPOINT_FILE))
            if trained and not overwrite:
                raise SpecrnnError(f"{run_dir} already holds a trained run: choose another --out, --resume it, or --overwrite")
            shutil.rmtree(run_dir)  # a run folder (finished with --overwrite, or stopped before training) is reused
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        info = {"data": data, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "version": _version()}
        write_json(run_dir / "run.json", {**info, "seeds": list(seeds)} if seeds else info)
        if seeds:
            from .seeds import train_seeds

            return train_seeds(data, run_dir, cfg, list(seeds), log=log)

    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())  # DDP workers re-run this command; they read it
    man = load_manifest(data)
    _set_threads(cfg)
    prep = prepare_data(man, cfg, run_dir, log)
    if resume and (run_dir / SPLIT_FILE).is_file():  # resuming on other data would silently train something else
        from .data.manifest import split_difference

        changed = split_difference(run_dir / SPLIT_FILE, prep.manifest)
        if changed:
            raise SpecrnnError(f"{data}: the data changed since {run_dir} started: {changed}; start a new run instead")
    return fit(prep, cfg, run_dir, resume=resume, log=log, t_start=t_start)


def _made_by_specrnn(run_dir: Path) -> bool:
    """A run folder (config.yaml and run.json), or one killed while it was being set up: nothing in it but
    config.yaml and its temp file. Only such folders are ever emptied for a new run."""
    if (run_dir / "config.yaml").is_file() and (run_dir / "run.json").is_file():
        return True
    return all(p.name == "config.yaml" or (p.name.startswith(".config.yaml.") and p.name.endswith(".tmp"))
               for p in run_dir.iterdir())


def fit(prep: Prepared, cfg: Config, run_dir: Path, resume: bool = False, log=print, callbacks=(), t_start: float | None = None,
        evaluate_test: bool = True) -> dict:
    """Train on prepared data into `run_dir` (model.pt, history, metrics, plots); returns the metrics.

    Shared by `train`, `cv` (one call per fold) and `tune` (one call per trial, with a pruning callback)."""
    t_start = time.perf_counter() if t_start is None else t_start
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import lightning.pytorch as L

    from .models import build_model
    from .models.build import count_parameters
    from .tasks import make_task
    from .training import BestModel, EpochLog, History, LitClassifier, make_trainer, weight_averaging

    _set_threads(cfg)
    L.seed_everything(cfg.seed, verbose=False)
    prep.manifest.to_csv(run_dir / SPLIT_FILE)
    sets = prep.sets
    task = make_task(cfg.model, prep.classes, cfg.train.label_smoothing)
    model = build_model(cfg.model, cfg.features.n_features, task.n_outputs, cfg.augment)
    if cfg.model.head == "ctc":
        check_ctc_lengths(model, sets, cfg.augment.speed)
    model.normalizer.fit(sets["train"].features)  # training rows only: val/test never shape the statistics
    train_loader, val_loader = _loader(sets["train"], cfg, True), _loader(sets["val"], cfg, False)
    meta = {"config": cfg.to_dict(), "classes": prep.classes, "specrnn_version": _version()}
    averaging = weight_averaging(cfg)
    best = BestModel(run_dir, meta, cfg.train.patience, cfg.train.min_epochs, averaging)
    extra = [averaging] if averaging is not None else []
    history = History(run_dir)
    epoch_lines = [] if sys.stderr.isatty() else [EpochLog(log)]  # a terminal has Lightning's progress bar instead
    trainer = make_trainer(cfg, run_dir, [*extra, best, history, *epoch_lines, *callbacks])
    n_groups = int(sets["train"].groups.max()) + 1 if cfg.train.adversary > 0 else 0
    lit = LitClassifier(model, task, cfg, len(train_loader), batch_augment(cfg, task.n_outputs, log), n_groups)
    log(f"training {describe(cfg)} ({count_parameters(model):,} parameters) on {len(sets['train'])} clips, "
        f"validating on {len(sets['val'])}; {_hardware(trainer)}")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    t_train = time.perf_counter()
    try:
        trainer.fit(lit, train_loader, val_loader, ckpt_path=str(ckpt) if resume and ckpt.exists() else None)
    except SystemExit:  # Lightning's answer to Ctrl-C: it has saved nothing new and ignores further Ctrl-C
        if not trainer.interrupted:
            raise
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise Interrupted(f"training interrupted; resume with: specrnn train --resume --out {run_dir}") from None
    train_seconds = time.perf_counter() - t_train + history.seconds_before_resume  # a resumed run counts its earlier epochs
    if not trainer.is_global_zero:
        return {}
    if trainer.interrupted:
        raise Interrupted(f"training interrupted; resume with: specrnn train --resume --out {run_dir}")

    from .inference import Predictor

    predictor = Predictor.load(run_dir, device=_device())
    metrics: dict = {"best_epoch": predictor.meta["epoch"] + 1, "epochs_run": trainer.current_epoch,
                     "best_val_loss": predictor.meta.get("val_loss"),
                     "parameters": count_parameters(model), "train_seconds": round(train_seconds, 2),
                     "classes": prep.classes, "model": describe(cfg), "hardware": _hardware(trainer)}
    for name in ("val", "test") if evaluate_test else ("val",):
        if len(sets[name]):
            metrics[name] = evaluate_features(predictor, sets[name])
    metrics["total_seconds"] = round(time.perf_counter() - t_start + history.seconds_before_resume, 2)
    _plots(run_dir, metrics, prep.classes)
    write_json(run_dir / "metrics.json", metrics)  # last: a run with metrics.json is complete (train --seeds reads it)
    log(summary(run_dir, metrics))
    return metrics


def _hardware(trainer) -> str:
    """Where and how the training runs, e.g. 'cuda:0, bf16-mixed' or 'cpu x 2 processes, 32-true'."""
    procs = f" x {trainer.world_size} processes" if trainer.world_size > 1 else ""
    return f"{trainer.strategy.root_device}{procs}, {trainer.precision}"


def batch_augment(cfg: Config, n_classes: int, log=print):
    """The training-batch augmentation the config asks for (None when it asks for none); noise (built-in colours
    and clips from a folder) is turned into features once (clips cached) and mixed in the power domain."""
    import torch

    from .augment import BatchAugment, colored_noise
    from .config import NOISE_COLORS
    from .features import FeatureExtractor, dct_matrix

    a, f = cfg.augment, cfg.features
    if not (a.gain_db > 0 or a.time_shift > 0 or a.mixup > 0 or a.freq_warp > 0 or a.speed > 0 or a.noise_dir or a.noise_colors):
        return None
    noise = []
    if a.noise_colors:  # two seconds of each colour, the same every run: a stationary bank to slice from
        g, n = torch.Generator().manual_seed(0), 2 * f.sample_rate
        waves = torch.stack([colored_noise(NOISE_COLORS[c], n, g) for c in a.noise_colors])
        with torch.no_grad():
            noise += list(FeatureExtractor(f)(waves, torch.full((len(waves),), n))[0])
    if a.noise_dir:
        from .data.manifest import walk_audio

        if not Path(a.noise_dir).is_dir():
            raise SpecrnnError(f"augment.noise_dir {a.noise_dir}: {'not a folder' if Path(a.noise_dir).exists() else 'no such folder'}")
        paths = [str(p) for p in walk_audio(Path(a.noise_dir))]
        if not paths:
            raise SpecrnnError(f"augment.noise_dir {a.noise_dir}: no audio files")
        feats, errors = compute_features(paths, cfg.features, cfg.data.cache_dir, desc="noise")
        clips = [torch.from_numpy(x) for x in feats if x is not None]
        if errors and (cfg.data.on_error == "stop" or not clips):  # training must not quietly run without its noise
            raise BadFilesError(errors, f"They are in augment.noise_dir {a.noise_dir}" + (
                "; none of its files is usable." if not clips else ". Fix or remove them, or pass --on-error skip."))
        noise += clips
        log(f"background noise: {len(clips)} clip(s) from {a.noise_dir}" + (f" ({len(errors)} unusable)" if errors else ""))
    return BatchAugment(a, n_classes, noise, dct=dct_matrix(f.n_mels, f.n_mfcc) if f.kind == "mfcc" else None)


def _version() -> str:
    from . import __version__

    return __version__


def describe(cfg: Config) -> str:
    m = cfg.model
    front = "cnn + " if m.frontend.type == "cnn" else ""
    end = {"ctc": "CTC", "frame": "frame outputs"}.get(m.head, m.pooling)
    return f"{front}{'bi' if m.bidirectional else ''}{m.cell} {m.layers}x{m.hidden} + {end}"


def check_ctc_lengths(model, sets: dict[str, FeatureSet], speed: float = 0.0) -> None:
    """Each clip needs as many encoder steps as its token sequence (a blank between repeated tokens); fewer, and
    CTC cannot emit it: say which file, before training. Training clips are checked at the fastest speed
    perturbation (`augment.speed`), which shortens them."""
    import torch

    from .augment import stretched_lengths
    from .tasks.ctc import steps_needed

    for name, fs in sets.items():
        lengths = torch.as_tensor(fs.lengths)
        if name == "train" and speed > 0:
            lengths = stretched_lengths(lengths, 1 + speed)
        steps = model.output_lengths(lengths).numpy() if len(fs) else []
        for path, n, target in zip(fs.paths, steps, fs.targets):
            if n < steps_needed(target):
                faster = f" when played {1 + speed:g}x faster (augment.speed)" if name == "train" and speed > 0 else ""
                raise SpecrnnError(f"{path}: {n} encoder steps{faster} cannot hold its {steps_needed(target)}-step token "
                                   "sequence (CTC); lower model.stack, the CNN's time strides or augment.speed")


def evaluate_features(predictor, fs: FeatureSet) -> dict:
    from .evaluation import classification_metrics, multilabel_metrics

    if predictor.cfg.model.head == "ctc":
        from .evaluation import sequence_metrics
        from .tasks.ctc import unpad

        return sequence_metrics(unpad(fs.targets), [seq for seq, _ in predictor.decode(fs.features)], predictor.classes,
                                fs.paths)
    logits = predictor.logits_from_features(fs.features)
    if predictor.cfg.model.multilabel:
        return multilabel_metrics(fs.targets, predictor.probabilities(logits), predictor.classes)
    return classification_metrics(fs.targets, logits.argmax(-1), predictor.classes)


def _plots(run_dir: Path, metrics: dict, classes: list[str]) -> None:
    from . import plots

    if (run_dir / "history.csv").exists():
        plots.learning_curves(run_dir / "history.csv", run_dir / "learning_curves.png")
    split = "test" if "test" in metrics else "val"
    if "confusion_matrix" not in metrics[split]:
        return
    plots.confusion_matrix(np.asarray(metrics[split]["confusion_matrix"]), classes, run_dir / "confusion_matrix.png",
                           f"confusion matrix ({split}, n={metrics[split]['n']})")


def summary(run_dir: Path, m: dict) -> str:
    what = "tokens" if "token_error_rate" in m.get("val", {}) else "classes"
    lines = ["", "=" * 64, f"specrnn: {m['model']}, {m['parameters']:,} parameters, {len(m['classes'])} {what}",
             f"best epoch {m['best_epoch']} (of {m['epochs_run']} trained)"]
    for name in ("val", "test"):
        if name in m and "token_error_rate" in m[name]:
            lines.append(f"{name:>4} sequences right {100 * m[name]['accuracy']:6.2f}%   token error rate "
                         f"{100 * m[name]['token_error_rate']:6.2f}%   (n={m[name]['n']})")
            if m[name].get("empty_decodings", 0) > m[name]["n"] // 2:
                lines.append(f"     warning: {m[name]['empty_decodings']} of {m[name]['n']} {name} clips decode to nothing "
                             "(the blank wins every step): the model has not learnt the tokens yet; train longer "
                             "(train.max_epochs) or check the learning rate")
        elif name in m:
            lines.append(f"{name:>4} accuracy {100 * m[name]['accuracy']:6.2f}%   macro-F1 {100 * m[name]['macro_f1']:6.2f}%   "
                         f"(n={m[name]['n']})")
    lines += [f"time: training {m['train_seconds']:.1f} s, whole run {m['total_seconds']:.1f} s",
              f"run folder: {run_dir}  (model.pt, metrics.json, history.csv, config.yaml, *.png)",
              f"next: specrnn evaluate {run_dir}   |   specrnn predict {run_dir} FILE.wav", "=" * 64]
    return "\n".join(lines)


def evaluate(run_dir: str | Path, data: str | Path | None = None, split: str | None = None, on_error: str = "stop") -> dict:
    """Metrics of a trained run on DATA (default: the run's own test split); unseen labels are an error."""
    from .inference import Predictor

    run_dir = Path(run_dir)
    predictor = Predictor.load(run_dir)
    if data is None:
        if not (run_dir / SPLIT_FILE).is_file():
            raise SpecrnnError(f"{run_dir}: no {SPLIT_FILE}; give the DATA to evaluate on")
        man = load_manifest(run_dir / SPLIT_FILE)
        split = split or "test"
        if split not in set(man.splits or []):
            raise SpecrnnError(f"{run_dir}: the run has no '{split}' split; give DATA to evaluate on")
    else:
        man = load_manifest(data)
        if split is None and man.splits is not None:
            split = "test"
    rows = man.where_split(split) if split is not None else man
    if not len(rows):
        present = sorted(set(man.splits or []))
        raise SpecrnnError(f"no rows to evaluate in {man.source} (split {split}); its splits: "
                           f"{', '.join(present) if present else 'none (no split column)'}"
                           + ("; the rows the run carved for validation are in the run: specrnn evaluate RUN --split val"
                              if split == "val" and data is not None else ""))
    # all of `man`, not just `rows`: a per-speaker model's group means come from every row of the speaker
    fs = model_input_set(man, predictor.cfg, predictor.classes, split, "evaluate", label_kind(predictor.cfg.model))
    if fs.errors:
        if on_error == "stop":
            raise BadFilesError(fs.errors, "Fix or remove them, or pass --on-error skip.")
    metrics = evaluate_features(predictor, fs)
    metrics["skipped"] = [{"path": e.path, "reason": e.reason} for e in fs.errors]
    metrics["split"] = split  # None: every row of DATA
    if data is not None:
        metrics["seen_in_training"] = _seen_in_training(run_dir, rows.paths)
    return metrics


def _seen_in_training(run_dir: Path, paths: list[str]) -> dict[str, int]:
    """How many of these files the run trained on or validated on (from its split.csv): scores on them are optimistic."""
    if not (run_dir / SPLIT_FILE).is_file():
        return {}
    own = load_manifest(run_dir / SPLIT_FILE)
    where = {os.path.realpath(p): s for p, s in zip(own.paths, own.splits or [])}
    seen = [where.get(os.path.realpath(p)) for p in paths]
    return {s: seen.count(s) for s in ("train", "val") if seen.count(s)}
