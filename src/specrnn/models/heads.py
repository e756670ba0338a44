"""Output heads: one prediction per clip, or one per frame (sound-event detection, CTC)."""
from __future__ import annotations

from torch import Tensor, nn


class ClipHead(nn.Module):
    def __init__(self, size: int, n_out: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, n_out))

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled)


class FrameHead(nn.Module):
    def __init__(self, size: int, n_out: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, n_out))

    def forward(self, frames: Tensor) -> Tensor:
        return self.net(frames)
