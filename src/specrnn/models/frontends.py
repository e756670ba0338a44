"""Optional 2-D CNN front-end over (time, frequency): output size inferred, lengths propagated.

Padding cannot leak: padded frames are zeroed after every block (exactly what a clip alone sees as the
conv's zero padding), and batch-norm statistics in training use real frames only (MaskedBatchNorm2d).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import SpecrnnError
from ..features import lengths_to_mask


def stacked_lengths(lengths: Tensor, k: int) -> Tensor:
    """Clip lengths after stacking k frames into one: a last, incomplete group counts."""
    return (lengths + k - 1) // k


def stack_frames(x: Tensor, lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(B, T, F) -> (B, ceil(T/k), k*F): k consecutive frames side by side; lengths -> ceil(lengths/k).
    A clip's last group is completed with zeros, exactly what the (zeroed) padding of a batch holds."""
    if k <= 1:
        return x, lengths
    B, T, F = x.shape
    pad = (-T) % k
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(B, (T + pad) // k, k * F), stacked_lengths(lengths, k)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over (B, C, T, F) whose training statistics count only real frames."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if not self.training or mask is None:
            return super().forward(x)
        m = mask[:, None, :, None].to(x.dtype)  # (B, 1, T, 1)
        count = m.sum() * x.shape[-1]
        mean = (x * m).sum(dim=(0, 2, 3)) / count
        var = (((x - mean[None, :, None, None]) * m) ** 2).sum(dim=(0, 2, 3)) / count
        with torch.no_grad():
            mom = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - mom).add_(mom * mean)
            self.running_var.mul_(1 - mom).add_(mom * var * count / (count - 1).clamp_min(1))
            self.num_batches_tracked += 1
        y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


class ConvBlock(nn.Module):
    """conv (stride on time) -> masked BN -> ReLU -> max-pool over frequency only."""

    def __init__(self, c_in: int, c_out: int, kernel: int | list[int], time_stride: int, freq_pool: int):
        super().__init__()
        kt, kf = (kernel, kernel) if isinstance(kernel, int) else kernel
        if kt % 2 == 0 or kf % 2 == 0:
            raise SpecrnnError(f"CNN kernel sizes must be odd (got {kernel}): an even kernel cannot be centred")
        self.kernel, self.stride = kt, time_stride
        self.conv = nn.Conv2d(c_in, c_out, (kt, kf), stride=(time_stride, 1), padding=(kt // 2, kf // 2), bias=False)
        self.norm = MaskedBatchNorm2d(c_out)
        self.pool = nn.MaxPool2d((1, freq_pool)) if freq_pool > 1 else nn.Identity()

    def out_lengths(self, lengths: Tensor) -> Tensor:
        pad = self.kernel // 2
        return (lengths + 2 * pad - self.kernel) // self.stride + 1

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(x)
        lengths = self.out_lengths(lengths)
        mask = lengths_to_mask(lengths, x.shape[2])
        x = self.pool(torch.relu(self.norm(x, mask)))
        return x.masked_fill(~mask[:, None, :, None], 0.0), lengths


class CNNFrontend(nn.Module):
    """(B, T, F) -> (B, T', C*F') with T' from the time strides; `output_size` found by a dry run."""

    def __init__(self, n_features: int, channels: list[int], kernel: int | list[int] = 3, time_strides: list[int] | None = None,
                 freq_pools: list[int] | None = None, dropout: float = 0.0):
        super().__init__()
        n = len(channels)
        time_strides = list(time_strides or [1] * n) + [1] * (n - len(time_strides or []))
        freq_pools = list(freq_pools or [1] * n) + [1] * (n - len(freq_pools or []))
        c_in = 1
        blocks = []
        for c, s, p in zip(channels, time_strides, freq_pools):
            blocks.append(ConvBlock(c_in, c, kernel, s, p))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():  # infer the RNN's input size from the real output
            was = self.training
            self.eval()
            try:
                y, _ = self(torch.zeros(1, 16 * _prod(time_strides), n_features), torch.tensor([16 * _prod(time_strides)]))
            except RuntimeError:
                y = torch.zeros(1, 1, 0)
            self.train(was)
        if y.shape[-1] == 0:
            raise SpecrnnError(f"the CNN front-end pools {n_features} frequency bins down to nothing; use smaller freq_pools")
        self.output_size = y.shape[-1]

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = x[:, None]  # (B, 1, T, F)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        B, C, T, F = x.shape
        return self.dropout(x.permute(0, 2, 1, 3).reshape(B, T, C * F)), lengths


def _prod(xs) -> int:
    out = 1
    for v in xs:
        out *= v
    return out
