"""Config -> model. `SpecRNN.forward(features, lengths)` is the contract every task and exporter uses."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..augment import SpecAugment
from ..config import AugmentConfig, ModelConfig
from ..features import Normalizer
from .encoders import RNNEncoder
from .frontends import CNNFrontend, stack_frames, stacked_lengths
from .heads import Head
from .pooling import Pooling

if TYPE_CHECKING:
    from ..tasks import Task


class SpecRNN(nn.Module):
    """normaliser -> SpecAugment (training only) -> front-end -> RNN encoder -> pooling -> head."""

    def __init__(self, cfg: ModelConfig, n_features: int, n_outputs: int, augment: AugmentConfig | None = None,
                 blank: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.blank = blank  # CTC: the blank's output index (frame outputs); None for classification
        self.normalizer = Normalizer(cfg.normalize, n_features)
        a = augment or AugmentConfig(time_masks=0, freq_masks=0)
        self.specaugment = SpecAugment(a.time_masks, a.time_mask_width, a.freq_masks, a.freq_mask_width, a.time_mask_fraction)
        fe = cfg.frontend
        n_features = n_features * cfg.stack
        self.frontend = (
            CNNFrontend(n_features, fe.channels, fe.kernel, fe.time_strides, fe.freq_pools, fe.dropout) if fe.type == "cnn" else None
        )
        rnn_in = self.frontend.output_size if self.frontend is not None else n_features
        self.encoder = RNNEncoder(
            rnn_in, cfg.cell, cfg.hidden, cfg.layers, cfg.bidirectional, cfg.dropout, cfg.layer_norm, cfg.projection, cfg.rnn_impl,
            cfg.rnn_init,
        )
        size = self.encoder.output_size
        if cfg.head == "frame" or blank is not None:
            self.pooling = None
            self.head: nn.Module = Head(size, n_outputs, cfg.dropout, cfg.head_hidden)
        else:
            self.pooling = Pooling(cfg.pooling, size, cfg.bidirectional, cfg.attention_heads)
            self.head = Head(self.pooling.output_size, n_outputs, cfg.dropout, cfg.head_hidden)

    def encode(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Features (B, T, F) -> encoder frames (B, T', D) and their lengths."""
        x = self.specaugment(self.normalizer(features, lengths), lengths)
        x, lengths = stack_frames(x, lengths, self.cfg.stack)
        if self.frontend is not None:
            x, lengths = self.frontend(x, lengths)
        return self.encoder(x, lengths), lengths

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder steps per clip of these feature lengths (after frame stacking and the CNN's time strides)."""
        lengths = stacked_lengths(lengths, self.cfg.stack)
        for block in self.frontend.blocks if self.frontend is not None else []:
            lengths = block.out_lengths(lengths)
        return lengths

    def forward(self, features: Tensor, lengths: Tensor):
        """Clip head: logits (B, C). Frame and CTC heads: (logits (B, T', C), lengths (B,))."""
        if self.pooling is None:
            h, lengths = self.encode(features, lengths)
            return self.head(h), lengths
        return self.head(self.embed(features, lengths))

    def embed(self, features: Tensor, lengths: Tensor) -> Tensor:
        """The pooled clip embedding (B, D) the clip head reads (clip heads only)."""
        h, lengths = self.encode(features, lengths)
        return self.pooling(h, lengths)[0]

    @torch.no_grad()
    def attention(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor] | None:
        """Attention weights (B, T', heads) and their lengths, for plots; None without attention pooling."""
        if self.pooling is None or self.pooling.mode not in ("attention", "dot"):
            return None
        h, lengths = self.encode(features, lengths)
        return self.pooling(h, lengths)[1], lengths


def build_model(cfg: ModelConfig, n_features: int, task: Task | int, augment: AugmentConfig | None = None) -> SpecRNN:
    """The model a task needs: its outputs (a task, or a number of classes) and, for CTC, frame outputs and a blank."""
    if isinstance(task, int):
        return SpecRNN(cfg, n_features, task, augment)
    return SpecRNN(cfg, n_features, task.n_outputs, augment, getattr(task, "blank", None))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def summarize(model: SpecRNN, n_features: int, frames: int = 100) -> str:
    """A table of the top-level layers: output shape for one clip of `frames` frames, and parameters."""
    rows = []
    x = torch.zeros(1, frames, n_features)
    lengths = torch.tensor([frames])
    was = model.training
    model.eval()
    with torch.no_grad():
        rows.append(("input", tuple(x.shape), 0))
        x = model.normalizer(x, lengths)
        rows.append((f"normalizer ({model.cfg.normalize})", tuple(x.shape), 0))
        if model.cfg.stack > 1:
            x, lengths = stack_frames(x, lengths, model.cfg.stack)
            rows.append((f"stack frames (x{model.cfg.stack})", tuple(x.shape), 0))
        if model.frontend is not None:
            x, lengths = model.frontend(x, lengths)
            rows.append(("frontend (cnn)", tuple(x.shape), count_parameters(model.frontend)))
        h = model.encoder(x, lengths)
        enc = model.encoder
        name = f"encoder ({'bi' if enc.bidirectional else ''}{enc.cell} x{len(enc.fwd)}, {enc.hidden})"
        rows.append((name, tuple(h.shape), count_parameters(enc)))
        if model.pooling is not None:
            p, _ = model.pooling(h, lengths)
            rows.append((f"pooling ({model.pooling.mode})", tuple(p.shape), count_parameters(model.pooling)))
            out = model.head(p)
        else:
            out = model.head(h)
        rows.append(("head", tuple(out.shape), count_parameters(model.head)))
    model.train(was)
    width = max(len(r[0]) for r in rows)
    lines = [f"{'layer':<{width}}  {'output shape':<18} {'params':>10}"]
    lines += [f"{n:<{width}}  {str(s):<18} {p:>10,}" for n, s, p in rows]
    lines.append(f"{'total':<{width}}  {'':<18} {count_parameters(model):>10,}")
    return "\n".join(lines)
