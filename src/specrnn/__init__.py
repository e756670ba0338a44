"""specrnn: recurrent networks on audio spectrograms, exact on variable-length input.

Python API (the twin of the CLI):
    metrics = specrnn.train("data/", out="runs/a")          # or train() for the built-in demo
    specrnn.evaluate("runs/a", "data/test.csv")
    specrnn.load("runs/a").predict(["clip.wav"])

Arguments that take lists (overrides, split rules, seeds) also take one item; `log=None` silences the progress
lines that `log=print` (the default) shows.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .devices import keeps_threads

if TYPE_CHECKING:
    from .results import CVResult, SplitMetrics, TrainResult

__version__ = "0.1.0"
__all__ = ["train", "evaluate", "load", "manifest", "cv", "tune", "report", "SpecrnnError", "TrainResult", "SplitMetrics",
           "CVResult", "__version__"]

Log = Callable[..., Any] | None


def _quiet(*args, **kwargs) -> None:
    pass


def _log(log: Log) -> Callable[..., Any]:
    return _quiet if log is None else log


def _items(value, name: str) -> list | None:
    """One item or a list of them -> a list (None stays None); a string is one item, not its characters."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return [str(value)]
    if isinstance(value, (list, tuple)):
        return list(value)
    from .errors import SpecrnnError

    raise SpecrnnError(f"{name} must be a string or a list of strings, got {type(value).__name__}")


def _overrides(value) -> list[str] | dict | None:
    """--set items: 'key=value', a list of them, or a dict, nested ({'model': {'hidden': 32}}) or dotted
    ({'model.hidden': 32})."""
    return value if isinstance(value, dict) else _items(value, "overrides")


def _data(data):
    """A path (str or Path). A Manifest object must be saved first: a run records where its data lives."""
    from .data.manifest import Manifest
    from .errors import SpecrnnError

    if isinstance(data, Manifest):
        raise SpecrnnError("pass the manifest as a CSV path: save it with manifest.to_csv('data.csv') first "
                           "(a run records where its data lives, to resume and to evaluate)")
    if data is not None and not isinstance(data, (str, Path)):
        raise SpecrnnError(f"DATA must be a folder or a CSV path (str or Path), got {type(data).__name__}")
    return data


@keeps_threads
def train(data: str | Path | None = None, out: str | Path | None = None, config=None, overrides=None,
          resume: bool = False, overwrite: bool = False, log: Log = print, seeds=None) -> TrainResult:
    """Train on a folder-per-class tree or a CSV manifest (None: the built-in demo data) into the run folder
    `out`; returns its TrainResult (`.test.accuracy`, `.run_dir`; metrics.json holds the same). `config`: a YAML path, preset name, dict or Config;
    `overrides`: 'key=value' items as with --set. `resume=True` continues `out` with its own data and config.
    `seeds` (e.g. [0, 1, 2]): one run per seed on one split, and `out` keeps the best-validated one."""
    from .experiments.seeds import train as _train

    return _train(_data(data), out, config, _overrides(overrides), resume=resume, overwrite=overwrite, log=_log(log),
                  seeds=None if seeds is None else _seeds(seeds))


def evaluate(run_dir: str | Path, data: str | Path | None = None, split: str | None = None,
             on_error: str = "stop") -> SplitMetrics:
    """Metrics of a run on DATA (default: its own test split): accuracy, macro-F1, per-class figures and confusion
    matrix; for a CTC run, sequences right, the token error rate and the wrong sequences."""
    from .jobs import evaluate as _evaluate
    from .results import SplitMetrics

    return SplitMetrics.of(_evaluate(run_dir, _data(data), split, on_error=on_error))


def load(run_dir: str | Path, device: str | None = None):
    """A `Predictor` for a run folder: `.predict(paths)`, `.stream()`. `device`: 'cpu', 'cuda' (default: a GPU when
    torch sees one)."""
    from .inference import load as _load

    return _load(run_dir, device)


def manifest(root: str | Path, pattern: str, split_rules=None):
    """A `Manifest` from file names, e.g. pattern '{label}_{speaker}_{take}.wav', rules ['take<5=test'];
    `.unmatched` lists the files the pattern did not match. Save it with `.to_csv(path)` to train on it."""
    from .data.manifest import from_pattern

    return from_pattern(root, pattern, _items(split_rules, "split_rules"))


@keeps_threads
def cv(data: str | Path, out: str | Path, config=None, overrides=None, fold_column: str | None = None,
       folds: int | None = None, leave_one_group_out: bool = False, group_column: str | None = None,
       seeds=(0,), jobs: int | None = None, train_extra: str | Path | None = None, log: Log = print) -> CVResult:
    """Cross-validation: folds from a column (`fold` by default when present), stratified (group-aware) K-fold,
    or leave-one-group-out; one training per fold and seed (`seeds`: an int, a list, or '0,1,2'); returns cv.json's
    summary (typed). `train_extra`: a manifest or folder whose rows join every fold's training part only. Rerun the same
    call to resume."""
    from .experiments.cv import cv as _cv
    from .results import CVResult

    return CVResult.of(_cv(_data(data), out, config, _overrides(overrides), fold_column=fold_column, folds=folds,
               leave_one_group_out=leave_one_group_out, group_column=group_column, seeds=_seeds(seeds), jobs=jobs,
               train_extra=None if train_extra is None else _data(train_extra), log=_log(log)))


def _seeds(seeds) -> list[int]:
    from .config import parse_seeds

    return parse_seeds(seeds)


@keeps_threads
def tune(data: str | Path, out: str | Path, trials: int = 20, timeout: float | None = None, storage: str | None = None,
         space: str | Path | None = None, config=None, overrides=None, jobs: int | None = None, log: Log = print) -> dict:
    """Optuna search on validation data only; writes best.yaml (usable with train's config), trials.csv and plots;
    rerun the same call to resume the study from its SQLite storage."""
    from .experiments.tune import tune as _tune

    return _tune(_data(data), out, trials, timeout=timeout, storage=storage, space=space, config=config,
                 overrides=_overrides(overrides), jobs=jobs, log=_log(log))


def report(path: str | Path, out: str | Path | None = None) -> Path:
    """Self-contained HTML report of a run or CV folder; returns the file's path."""
    from .reporting import report as _report

    return _report(path, out)


def __getattr__(name: str):
    """`specrnn.SpecrnnError`: the one exception type for user-facing problems, importable without torch."""
    if name == "SpecrnnError":
        from .errors import SpecrnnError

        return SpecrnnError
    if name in ("TrainResult", "SplitMetrics", "CVResult"):  # the typed results, also importable without torch
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module 'specrnn' has no attribute {name!r}")
