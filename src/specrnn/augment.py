"""Training-time augmentation on feature batches, vectorised in torch. Modules act only in training mode,
so evaluation, validation and prediction never see augmented data."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def random_masks(lengths: Tensor, size: int, count: int, max_width: int, generator=None) -> Tensor:
    """(B, size) bool: `count` random spans of width 0..max_width per row, inside each row's `lengths`."""
    B = lengths.shape[0]
    device = lengths.device
    if count <= 0 or max_width <= 0:
        return torch.zeros(B, size, dtype=torch.bool, device=device)
    width = (torch.rand(B, count, 1, device=device, generator=generator) * (max_width + 1)).long()
    room = (lengths[:, None, None] - width).clamp_min(1)
    start = (torch.rand(B, count, 1, device=device, generator=generator) * room).long()
    pos = torch.arange(size, device=device)[None, None, :]
    return ((pos >= start) & (pos < start + width)).any(1)


class SpecAugment(nn.Module):
    """Time and frequency masks (Park et al. 2019) on normalised features; masked values become 0 (the mean)."""

    def __init__(self, time_masks: int = 2, time_width: int = 10, freq_masks: int = 2, freq_width: int = 8):
        super().__init__()
        self.time_masks, self.time_width, self.freq_masks, self.freq_width = time_masks, time_width, freq_masks, freq_width

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if not self.training:
            return x
        B, T, F = x.shape
        t_mask = random_masks(lengths, T, self.time_masks, self.time_width)
        f_mask = random_masks(torch.full((B,), F, device=x.device), F, self.freq_masks, self.freq_width)
        return x.masked_fill(t_mask[:, :, None] | f_mask[:, None, :], 0.0)
