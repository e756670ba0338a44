"""Clip classification: single-label (softmax + cross-entropy with label smoothing) or multi-label (BCE)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class ClassificationTask:
    def __init__(self, classes: list[str], label_smoothing: float = 0.0, multilabel: bool = False):
        self.classes, self.label_smoothing, self.multilabel = classes, label_smoothing, multilabel

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.multilabel:
            if targets.dim() == 1:
                targets = F.one_hot(targets, self.n_outputs)
            return F.binary_cross_entropy_with_logits(logits, targets.float())
        if targets.dim() == 2:  # soft targets (mixup)
            return torch.sum(-targets * F.log_softmax(logits, -1), -1).mean()
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def probabilities(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, -1)

    @staticmethod
    def correct(logits: Tensor, targets: Tensor) -> Tensor:
        hard = targets.argmax(-1) if targets.dim() == 2 else targets
        return (logits.argmax(-1) == hard).sum()
