"""The Task interface: what is learned, separate from the model that learns it (pyannote.audio's split).

A task owns the number of model outputs, the loss and what validation counts, how a trained model is scored on a
feature set, the summary lines people read, the score tuning maximises and the key that picks among seeds. The
rest of specrnn asks the task instead of testing which head a model has."""
from __future__ import annotations

from torch import Tensor


class Task:
    """Base of ClassificationTask and CTCTask; subclasses fill in every method."""

    name = "task"
    sequence = False  # True: labels are token sequences decoded from frame outputs (CTC)
    multilabel = False  # True: any number of classes per clip (sigmoid outputs)
    unit = "classes"  # what the summary counts
    headline = ("accuracy", "accuracy")  # (metrics key, name) of the figure shown per split and per seed
    criterion = "validation accuracy"  # how `train --seeds` chooses

    classes: list[str]

    @property
    def n_outputs(self) -> int:
        raise NotImplementedError

    def loss(self, outputs, targets: Tensor, reduction: str = "mean", smoothing: bool = True) -> Tensor:
        raise NotImplementedError

    def correct(self, outputs, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def units(self, targets: Tensor) -> int:
        raise NotImplementedError

    def evaluate(self, predictor, fs) -> dict:
        """Metrics of a loaded Predictor on a FeatureSet with targets."""
        raise NotImplementedError

    def check(self, model, sets: dict, cfg) -> None:
        """Refuse, before training, data this model cannot learn (nothing to check by default)."""

    @classmethod
    def summary_lines(cls, name: str, m: dict) -> list[str]:
        """The console summary's lines for one split's metrics."""
        raise NotImplementedError

    @classmethod
    def score(cls, split_metrics: dict) -> float:
        """Higher is better: what tuning maximises and what cv reports per fold."""
        return float(split_metrics.get("accuracy", 0.0))

    @classmethod
    def selection_value(cls, val_metrics: dict) -> float:
        """Lower is better: what `train --seeds` minimises on validation (ties: the validation loss)."""
        return -float(val_metrics.get("accuracy", 0.0))  # multi-label runs without accuracy: validation loss alone

    @classmethod
    def score_line(cls, split_metrics: dict, split: str = "test") -> str:
        """'test accuracy 97.50%': one split's headline figure in words."""
        key, what = cls.headline
        return f"{split} {what} {100 * split_metrics[key]:.2f}%"
