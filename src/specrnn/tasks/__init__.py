"""Tasks: what is learned (labels, loss, metrics), separate from the model that learns it. The config's `task`
section picks one (`task.kind`: classification, multilabel or ctc), inferred from the labels when it says auto."""
from __future__ import annotations

import numpy as np

from ..errors import SpecrnnError

from .base import Task
from .classification import ClassificationTask, encode_labels
from .classification import label_names as class_names
from .ctc import CTCTask, encode_sequences, token_names

__all__ = ["Task", "ClassificationTask", "CTCTask", "make_task", "task_of_metrics", "infer_kind", "with_task", "with_kind",
           "label_names", "encode", "label_kind"]


def infer_kind(labels: list[str]) -> str:
    """The task these labels ask for: mostly space-separated token sequences -> 'ctc', any ';'-joined classes ->
    'multilabel', else 'classification'."""
    if sum(" " in x.strip() for x in labels) > len(labels) / 2:
        return "ctc"
    return "multilabel" if any(";" in x for x in labels) else "classification"


def with_task(cfg, labels: list[str]):
    """The config with `task.kind` concrete: as given, or inferred from the labels when it is auto."""
    return cfg if cfg.task.kind != "auto" else with_kind(cfg, infer_kind(labels))


def with_kind(cfg, kind: str):
    """The config with `task.kind` set to `kind` where it is auto (a concrete kind is kept)."""
    if cfg.task.kind != "auto":
        return cfg
    return cfg.model_copy(update={"task": cfg.task.model_copy(update={"kind": kind})})


def _kind(task_cfg) -> str:
    if task_cfg.kind == "auto":
        raise SpecrnnError("config 'task.kind' is auto here, where no labels are read: resolve it from the labels first "
                           "(specrnn.tasks.with_task), as training does")
    return task_cfg.kind


def label_kind(task_cfg) -> str:
    """How labels are read: 'sequence' (CTC), 'multi' (multi-label) or 'single'."""
    return {"ctc": "sequence", "multilabel": "multi", "classification": "single"}[_kind(task_cfg)]


def label_names(labels: list[str], kind: str) -> list[str]:
    """The classes (or, for sequences, the tokens) that these labels use, sorted."""
    return token_names(labels) if kind == "sequence" else class_names(labels, kind == "multi")


def encode(labels: list[str], classes: list[str], kind: str) -> np.ndarray:
    """Targets: class indices (N,), multi-hot rows (N, C), or -1-padded token rows (N, S)."""
    return encode_sequences(labels, classes) if kind == "sequence" else encode_labels(labels, classes, kind == "multi")


def make_task(task_cfg, classes: list[str], label_smoothing: float = 0.0) -> Task:
    """The Task of a config's `task` section over these classes (or tokens)."""
    kind = _kind(task_cfg)
    if kind == "ctc":
        return CTCTask(classes)
    return ClassificationTask(classes, label_smoothing, kind == "multilabel")


def task_of_metrics(split_metrics: dict) -> type[Task]:
    """The task whose metrics these are (cv, seeds and reports read metrics.json files, not models)."""
    return CTCTask if "token_error_rate" in split_metrics else ClassificationTask
