"""specrnn: recurrent networks on audio spectrograms, exact on variable-length input.

Python API (the twin of the CLI):
    metrics = specrnn.train("data/", out="runs/a")          # or train() for the built-in demo
    specrnn.evaluate("runs/a", "data/test.csv")
    specrnn.load("runs/a").predict(["clip.wav"])
"""
from __future__ import annotations

__version__ = "0.1.0"


def train(data=None, out=None, config=None, overrides=None, **kwargs) -> dict:
    """Train on a folder-per-class or CSV manifest (None: the demo data); returns the metrics."""
    from .pipeline import train as _train

    return _train(data, out, config, overrides, **kwargs)


def evaluate(run_dir, data=None, split=None, **kwargs) -> dict:
    """Accuracy, macro-F1, per-class figures and confusion matrix of a run on DATA (default: its test split)."""
    from .pipeline import evaluate as _evaluate

    return _evaluate(run_dir, data, split, **kwargs)


def load(run_dir, device=None):
    """A `Predictor` for a run folder: `.predict(paths)`."""
    from .inference import load as _load

    return _load(run_dir, device)


def manifest(root, pattern, split_rules=None):
    """A `Manifest` from file names, e.g. pattern '{label}_{speaker}_{take}.wav', rules ['take<5=test']."""
    from .data.manifest import from_pattern

    return from_pattern(root, pattern, split_rules)


def cv(data, out, config=None, overrides=None, **kwargs) -> dict:
    """Cross-validation (fold column, K-fold or leave-one-group-out, several seeds); returns cv.json's summary."""
    from .crossval import cv as _cv

    return _cv(data, out, config, overrides, **kwargs)


def tune(data, out, trials=20, **kwargs) -> dict:
    """Optuna search on validation data; writes best.yaml (usable with train --config) and plots."""
    from .tuning import tune as _tune

    return _tune(data, out, trials, **kwargs)


def report(path, out=None):
    """Self-contained HTML report of a run or CV folder; returns the file's path."""
    from .reporting import report as _report

    return _report(path, out)
