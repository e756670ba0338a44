"""Clip classification: single-label (softmax + cross-entropy with label smoothing) or multi-label (sigmoid + BCE,
labels joined by ';' in a manifest). A frame-level head is trained on clip labels through the masked mean of
its frame logits (weak labels), so the same task serves clip and frame models."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Task

LABEL_SEP = ";"


def clip_logits(outputs) -> Tensor:
    """Model outputs -> (B, C) clip logits: clip heads pass through; frame heads average their real frames."""
    if isinstance(outputs, tuple):
        frames, lengths = outputs
        mask = (torch.arange(frames.shape[1], device=frames.device)[None] < lengths.to(frames.device)[:, None])[..., None]
        return (frames * mask).sum(1) / mask.sum(1).clamp_min(1)
    return outputs


def label_names(labels: list[str], multilabel: bool) -> list[str]:
    if not multilabel:
        return sorted(set(labels))
    return sorted({part.strip() for lab in labels for part in lab.split(LABEL_SEP) if part.strip()})


def encode_labels(labels: list[str], classes: list[str], multilabel: bool) -> np.ndarray:
    """Class indices (N,) or multi-hot rows (N, C) for multi-label tasks."""
    index = {c: i for i, c in enumerate(classes)}
    if not multilabel:
        return np.array([index[lab] for lab in labels], dtype=np.int64)
    out = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for row, lab in enumerate(labels):
        for part in lab.split(LABEL_SEP):
            if part.strip():
                out[row, index[part.strip()]] = 1.0
    return out


class ClassificationTask(Task):
    """One class per clip (softmax), or any number of them (multi-label: sigmoid per class)."""

    name = "classification"

    def __init__(self, classes: list[str], label_smoothing: float = 0.0, multilabel: bool = False):
        self.classes, self.label_smoothing, self.multilabel = classes, label_smoothing, multilabel
        self.weights: Tensor | None = None  # per-class loss weights (train.class_weights: balanced)

    def balance(self, targets) -> Tensor:
        """Weight each class by N / (C x its count) in the training targets, so every class counts as much in the
        loss as if the classes were equally common (multi-label: BCE's positive weight, negatives / positives)."""
        t = torch.as_tensor(targets)
        C = len(self.classes)
        if self.multilabel:
            pos = t.float().sum(0).clamp_min(1)
            self.weights = (t.shape[0] - pos).clamp_min(1) / pos
        else:
            counts = torch.bincount(t.long(), minlength=C).float()
            self.weights = torch.where(counts > 0, t.shape[0] / (C * counts.clamp_min(1)), torch.ones(C))
        return self.weights

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def loss(self, outputs, targets: Tensor, reduction: str = "mean", smoothing: bool = True) -> Tensor:
        logits = clip_logits(outputs)
        w = None if self.weights is None else self.weights.to(logits.device, logits.dtype)
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction=reduction, pos_weight=w)
        if targets.dim() == 2:  # soft targets (mixup)
            per = torch.sum(-targets * F.log_softmax(logits, -1) * (1 if w is None else w), -1)
            return per.mean() if reduction == "mean" else per.sum()
        return F.cross_entropy(logits, targets, weight=w, label_smoothing=self.label_smoothing if smoothing else 0.0,
                               reduction=reduction)

    def probabilities(self, outputs) -> Tensor:
        logits = clip_logits(outputs)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, -1)

    def units(self, targets: Tensor) -> int:
        """What validation accuracy counts: clips."""
        return targets.shape[0]

    def correct(self, outputs, targets: Tensor) -> Tensor:
        """Correct clips: the arg-max class, or (multi-label) every label right at threshold 0.5."""
        logits = clip_logits(outputs)
        if self.multilabel:
            return ((logits > 0) == (targets > 0.5)).all(-1).sum()
        hard = targets.argmax(-1) if targets.dim() == 2 else targets
        return (logits.argmax(-1) == hard).sum()

    def evaluate(self, predictor, fs) -> dict:
        from ..evaluation import classification_metrics, multilabel_metrics

        logits = predictor.logits_from_features(fs.features)
        if self.multilabel:
            return multilabel_metrics(fs.targets, predictor.probabilities(logits), self.classes)
        return classification_metrics(fs.targets, logits.argmax(-1), self.classes)

    @classmethod
    def summary_lines(cls, name: str, m: dict) -> list[str]:
        return [f"{name:>4} accuracy {100 * m['accuracy']:6.2f}%   macro-F1 {100 * m['macro_f1']:6.2f}%   (n={m['n']})"]
