"""Typed results of the Python API: what `train`, `evaluate` and `cv` return.

Each is a frozen dataclass whose figures people read are attributes (`result.test.accuracy`). The files a run
writes (metrics.json, cv.json) keep their layout, and a result still reads like it (`result["test"]["accuracy"]`,
`to_dict()`), so scripts written against the dicts keep working.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["SplitMetrics", "TrainResult", "CVResult"]


class _Readable:
    """Dict-style reading of the JSON layout beside the typed attributes."""

    raw: dict

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __contains__(self, key: object) -> bool:
        return key in self.raw

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    def keys(self):
        return self.raw.keys()

    def to_dict(self) -> dict:
        """The result as its JSON file holds it (a copy)."""
        return copy.deepcopy(self.raw)


def _opt(m: dict, key: str) -> Optional[float]:
    return None if m.get(key) is None else float(m[key])


@dataclass(frozen=True)
class SplitMetrics(_Readable):
    """One split's figures. Classification: accuracy and macro-F1 (multi-label: exact-match accuracy, `mAP`); CTC:
    `accuracy` is the share of sequences decoded exactly and `token_error_rate` the edits per reference token."""

    n: int
    accuracy: Optional[float]
    macro_f1: Optional[float]
    token_error_rate: Optional[float]
    mAP: Optional[float]
    classes: list[str]
    raw: dict = field(repr=False)

    @classmethod
    def of(cls, m: dict) -> "SplitMetrics":
        return cls(int(m.get("n", 0)), _opt(m, "accuracy"), _opt(m, "macro_f1"), _opt(m, "token_error_rate"),
                   _opt(m, "mAP"), list(m.get("classes", [])), m)

    @property
    def confusion_matrix(self) -> Optional[list[list[int]]]:
        return self.raw.get("confusion_matrix")


@dataclass(frozen=True)
class TrainResult(_Readable):
    """A trained run: where it is, what was trained, and its validation and test figures (test is None when the
    data has no test rows)."""

    run_dir: Optional[Path]
    model: str
    parameters: int
    classes: list[str]
    best_epoch: int
    epochs_run: int
    best_val_loss: float
    train_seconds: float
    total_seconds: Optional[float]
    val: Optional[SplitMetrics]
    test: Optional[SplitMetrics]
    raw: dict = field(repr=False)

    @classmethod
    def of(cls, m: dict, run_dir: str | Path | None = None) -> "TrainResult":
        split = lambda name: SplitMetrics.of(m[name]) if isinstance(m.get(name), dict) else None  # noqa: E731
        return cls(None if run_dir is None else Path(run_dir), str(m.get("model", "")), int(m.get("parameters", 0)),
                   list(m.get("classes", [])), int(m.get("best_epoch", 0)), int(m.get("epochs_run", 0)),
                   float(m.get("best_val_loss", float("nan"))), float(m.get("train_seconds", 0.0)),
                   _opt(m, "total_seconds"), split("val"), split("test"), m)


@dataclass(frozen=True)
class CVResult(_Readable):
    """A cross-validation: the figure per fold (dicts as cv.json holds them), mean and standard deviation over
    folds. Classification fills the accuracy figures, CTC the token error rate ones."""

    protocol: str
    folds: list[dict]
    n_runs: int
    seeds: list[int]
    classes: list[str]
    accuracy_mean: Optional[float]
    accuracy_std: Optional[float]
    macro_f1_mean: Optional[float]
    token_error_rate_mean: Optional[float]
    token_error_rate_std: Optional[float]
    raw: dict = field(repr=False)

    @classmethod
    def of(cls, s: dict) -> "CVResult":
        return cls(str(s.get("protocol", "")), list(s.get("folds", [])), int(s.get("n_runs", 0)), list(s.get("seeds", [])),
                   list(s.get("classes", [])), _opt(s, "accuracy_mean"), _opt(s, "accuracy_std"), _opt(s, "macro_f1_mean"),
                   _opt(s, "token_error_rate_mean"), _opt(s, "token_error_rate_std"), s)
