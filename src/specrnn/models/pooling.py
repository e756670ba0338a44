"""Clip pooling over real frames only: true last state, masked mean / max / mean+std, additive attention."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..features import lengths_to_mask


def last_state(h: Tensor, lengths: Tensor, bidirectional: bool) -> Tensor:
    """Forward half at each clip's last real frame; for a bidirectional RNN joined with the backward half at frame 0."""
    idx = (lengths.to(h.device) - 1).clamp_min(0)
    last = h[torch.arange(h.shape[0], device=h.device), idx]
    if not bidirectional:
        return last
    half = h.shape[-1] // 2
    return torch.cat([last[:, :half], h[:, 0, half:]], dim=-1)


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    m = mask[..., None].to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_max(h: Tensor, mask: Tensor) -> Tensor:
    return h.masked_fill(~mask[..., None], -torch.inf).amax(1)


def masked_mean_std(h: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    mean = masked_mean(h, mask)
    var = masked_mean((h - mean[:, None]) ** 2, mask)
    return torch.cat([mean, (var + eps).sqrt()], dim=-1)


class AttentionPool(nn.Module):
    """Additive attention (one or several heads): softmax over real frames of v^T tanh(W h)."""

    def __init__(self, size: int, heads: int = 1, dim: int = 64):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(size, dim), nn.Tanh(), nn.Linear(dim, heads))
        self.heads = heads

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.score(h).masked_fill(~mask[..., None], -torch.inf)  # (B, T, heads)
        weights = torch.softmax(scores, dim=1)
        pooled = torch.einsum("bth,btd->bhd", weights, h).reshape(h.shape[0], -1)
        return pooled, weights


class DotAttentionPool(nn.Module):
    """Dot-product attention whose query is a projection of the true last state (de Andrade et al. 2018)."""

    def __init__(self, size: int, bidirectional: bool):
        super().__init__()
        self.query = nn.Linear(size, size)
        self.bidirectional = bidirectional

    def forward(self, h: Tensor, mask: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        q = self.query(last_state(h, lengths, self.bidirectional))  # (B, D)
        scores = torch.einsum("btd,bd->bt", h, q).masked_fill(~mask, -torch.inf)
        weights = torch.softmax(scores, dim=1)[..., None]  # (B, T, 1)
        return (weights * h).sum(1), weights


class Pooling(nn.Module):
    """One pooling mode behind one interface: (B, T, D), lengths -> (B, output_size), attention weights or None."""

    def __init__(self, mode: str, size: int, bidirectional: bool, heads: int = 1):
        super().__init__()
        self.mode, self.bidirectional = mode, bidirectional
        self.attention = AttentionPool(size, heads) if mode == "attention" else None
        self.dot = DotAttentionPool(size, bidirectional) if mode == "dot" else None
        self.output_size = size * {"meanstd": 2, "attention": heads}.get(mode, 1)

    def forward(self, h: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        mask = lengths_to_mask(lengths, h.shape[1])
        if self.mode == "last":
            return last_state(h, lengths, self.bidirectional), None
        if self.mode == "padded_last":  # KNOWN WRONG, kept to reproduce the seed recipe: reads padding
            return h[:, -1], None
        if self.mode == "dot":
            return self.dot(h, mask, lengths)
        if self.mode == "mean":
            return masked_mean(h, mask), None
        if self.mode == "max":
            return masked_max(h, mask), None
        if self.mode == "meanstd":
            return masked_mean_std(h, mask), None
        return self.attention(h, mask)
