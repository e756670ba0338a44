"""The main jobs end to end, shared by the CLI and the Python API: train one run (run folder -> prepared data ->
`fit` -> evaluation -> metrics.json, plots and the summary) and evaluate a trained run on labelled data."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .config import Config
from .data.dataset import FeatureSet, model_input_set
from .data.manifest import load_manifest
from .devices import default_device, set_threads
from .errors import BadFilesError, SpecrnnError
from .files import write_json
from .runs import RUN_DIR_ENV, SPLIT_FILE, RunStart, check_same_data, seen_in_training
from .tasks import label_kind, task_of_metrics
from .training.fit import describe, fit
from .training.prepare import Prepared, prepare_data


def train_single(start: RunStart, log=print, t_start: float | None = None) -> dict:
    """Train one run in a folder `runs.open_run` set up (or resumes); returns its metrics (also in metrics.json)."""
    t_start = time.perf_counter() if t_start is None else t_start
    os.environ[RUN_DIR_ENV] = str(start.run_dir.resolve())  # DDP workers re-run this command; they read it
    man = load_manifest(start.data)
    set_threads(start.cfg.train.threads)
    prep = prepare_data(man, start.cfg, start.run_dir, log)
    check_same_data(start, prep.manifest)
    return train_prepared(prep, start.cfg, start.run_dir, resume=start.resume, log=log, t_start=t_start)


def train_prepared(prep: Prepared, cfg: Config, run_dir: Path, resume: bool = False, log=print, callbacks=(),
                   t_start: float | None = None, evaluate_test: bool = True) -> dict:
    """`fit`, then the best model's metrics on validation (and test) data, plots, metrics.json (written last: a run
    with metrics.json is complete) and the summary; {} in a DDP run's extra processes."""
    t_start = time.perf_counter() if t_start is None else t_start
    fitted = fit(prep, cfg, run_dir, resume=resume, log=log, callbacks=callbacks)
    if fitted is None:
        return {}
    from .inference import Predictor

    predictor = Predictor.load(run_dir, device=default_device())
    metrics: dict = {"best_epoch": predictor.meta["epoch"] + 1, "epochs_run": fitted.epochs_run,
                     "best_val_loss": predictor.meta.get("val_loss"),
                     "parameters": fitted.parameters, "train_seconds": round(fitted.train_seconds, 2),
                     "classes": prep.classes, "model": describe(cfg), "hardware": fitted.hardware}
    for name in ("val", "test") if evaluate_test else ("val",):
        if len(prep.sets[name]):
            metrics[name] = evaluate_features(predictor, prep.sets[name])
    metrics["total_seconds"] = round(time.perf_counter() - t_start + fitted.seconds_before_resume, 2)
    write_plots(run_dir, metrics, prep.classes)
    write_json(run_dir / "metrics.json", metrics)  # last: a run with metrics.json is complete (train --seeds reads it)
    log(summary(run_dir, metrics))
    return metrics


def evaluate_features(predictor, fs: FeatureSet) -> dict:
    """The metrics of a loaded model on a feature set with targets: its task's (classification, multi-label, CTC)."""
    return predictor.task.evaluate(predictor, fs)


def write_plots(run_dir: Path, metrics: dict, classes: list[str]) -> None:
    from . import plots

    if (run_dir / "history.csv").exists():
        plots.learning_curves(run_dir / "history.csv", run_dir / "learning_curves.png")
    split = "test" if "test" in metrics else "val"
    if "confusion_matrix" not in metrics[split]:
        return
    plots.confusion_matrix(np.asarray(metrics[split]["confusion_matrix"]), classes, run_dir / "confusion_matrix.png",
                           f"confusion matrix ({split}, n={metrics[split]['n']})")


def summary(run_dir: Path, m: dict) -> str:
    task = task_of_metrics(m.get("val", {}))
    lines = ["", "=" * 64, f"specrnn: {m['model']}, {m['parameters']:,} parameters, {len(m['classes'])} {task.unit}",
             f"best epoch {m['best_epoch']} (of {m['epochs_run']} trained)"]
    for name in ("val", "test"):
        if name in m:
            lines += task.summary_lines(name, m[name])
    lines += [f"time: training {m['train_seconds']:.1f} s, whole run {m['total_seconds']:.1f} s",
              f"run folder: {run_dir}  (model.pt, metrics.json, history.csv, config.yaml, *.png)",
              f"next: specrnn evaluate {run_dir}   |   specrnn predict {run_dir} FILE.wav", "=" * 64]
    return "\n".join(lines)


def evaluate(run_dir: str | Path, data: str | Path | None = None, split: str | None = None, on_error: str = "stop",
             decoding: dict | None = None) -> dict:
    """Metrics of a trained run on DATA (default: the run's own test split); unseen labels are an error.
    `decoding`: a CTC model's Predictor.set_decoding options (beam, vocabulary, grammar, lm, ...; default greedy)."""
    from .inference import Predictor

    run_dir = Path(run_dir)
    predictor = Predictor.load(run_dir)
    if decoding:
        predictor.set_decoding(**decoding)
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
    fs = model_input_set(man, predictor.cfg, predictor.classes, split, "evaluate", label_kind(predictor.cfg.task))
    if fs.errors:
        if on_error == "stop":
            raise BadFilesError(fs.errors, "Fix or remove them, or pass --on-error skip.")
    metrics = evaluate_features(predictor, fs)
    metrics["skipped"] = [{"path": e.path, "reason": e.reason} for e in fs.errors]
    metrics["split"] = split  # None: every row of DATA
    if predictor.task.sequence:
        metrics["decoding"] = predictor.decoding.name() if predictor.decoding else "greedy"
    if data is not None:
        metrics["seen_in_training"] = seen_in_training(run_dir, rows.paths)
    return metrics
