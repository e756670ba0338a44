"""Tasks: what is learned (labels, loss, metrics), separate from the model that learns it. The model config's
head picks one: `clip` or `frame` heads learn classes (one label, or several joined by ';'), a `ctc` head
learns token sequences."""
from __future__ import annotations

import numpy as np

from .base import Task
from .classification import ClassificationTask, encode_labels
from .classification import label_names as class_names
from .ctc import CTCTask, encode_sequences, token_names

__all__ = ["Task", "ClassificationTask", "CTCTask", "make_task", "task_of_metrics", "is_sequence", "label_names", "encode", "label_kind"]


def is_sequence(model_cfg) -> bool:
    """True when the model config learns token sequences (a CTC head decoded over frames), else classes."""
    return model_cfg.head == "ctc"


def label_kind(model_cfg) -> str:
    """'sequence' (CTC), 'multi' (multi-label) or 'single'."""
    return "sequence" if is_sequence(model_cfg) else "multi" if model_cfg.multilabel else "single"


def label_names(labels: list[str], kind: str) -> list[str]:
    """The classes (or, for sequences, the tokens) that these labels use, sorted."""
    return token_names(labels) if kind == "sequence" else class_names(labels, kind == "multi")


def encode(labels: list[str], classes: list[str], kind: str) -> np.ndarray:
    """Targets: class indices (N,), multi-hot rows (N, C), or -1-padded token rows (N, S)."""
    return encode_sequences(labels, classes) if kind == "sequence" else encode_labels(labels, classes, kind == "multi")


def make_task(model_cfg, classes: list[str], label_smoothing: float = 0.0) -> Task:
    """The task a model config learns: CTC for a `ctc` head, else (multi-label) classification."""
    if is_sequence(model_cfg):
        return CTCTask(classes)
    return ClassificationTask(classes, label_smoothing, model_cfg.multilabel)


def task_of_metrics(split_metrics: dict) -> type[Task]:
    """The task whose metrics these are (cv, seeds and reports read metrics.json files, not models)."""
    return CTCTask if "token_error_rate" in split_metrics else ClassificationTask
