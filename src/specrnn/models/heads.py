"""Output head: an MLP over the last axis, so the same head scores a pooled clip (B, D) or every frame (B, T, D)
(sound-event detection, CTC)."""
from __future__ import annotations

from torch import Tensor, nn


def mlp(size: int, hidden: list[int], n_out: int, dropout: float) -> nn.Sequential:
    """Dropout -> [Linear -> ReLU -> Dropout]* -> Linear."""
    layers: list[nn.Module] = [nn.Dropout(dropout)]
    for h in hidden:
        layers += [nn.Linear(size, h), nn.ReLU(), nn.Dropout(dropout)]
        size = h
    return nn.Sequential(*layers, nn.Linear(size, n_out))


class Head(nn.Module):
    def __init__(self, size: int, n_out: int, dropout: float = 0.0, hidden: list[int] | None = None):
        super().__init__()
        self.net = mlp(size, hidden or [], n_out, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
