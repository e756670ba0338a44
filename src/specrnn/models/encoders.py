"""Padding-exact recurrent encoders (LSTM/GRU, layers, bidirectional) with carried state for streaming.

Exact by construction: a forward RNN's output at a real frame never depends on later (padded) frames,
and the backward direction runs on each clip reversed *within its own length*, so padding is read only
after every real frame. `impl="packed"` gives the same numbers with pack_padded_sequence. `auto` is the padded
form: it was the faster one on a 2-core CPU and on an H100 (benchmarks/NOTES.md, "GPU check").
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..features import lengths_to_mask


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first `lengths[b]` steps of each row of (B, T, ...); padding stays in place (an involution)."""
    T = x.shape[1]
    t = torch.arange(T, device=x.device)[None, :]
    L = lengths.to(x.device)[:, None]
    idx = torch.where(t < L, L - 1 - t, t)
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x))


class RNNEncoder(nn.Module):
    """Stack of uni- or bidirectional LSTM/GRU layers; one nn.LSTM/GRU per layer and direction."""

    def __init__(
        self,
        input_size: int,
        cell: str = "gru",
        hidden: int = 128,
        layers: int = 2,
        bidirectional: bool = True,
        dropout: float = 0.0,
        layer_norm: bool = False,
        projection: int | None = None,
        impl: str = "auto",
        init: str = "default",
    ):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.cell, self.hidden, self.bidirectional, self.impl = cell, hidden, bidirectional, impl
        self.fwd, self.bwd, self.between = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        size = input_size
        for layer in range(layers):
            self.fwd.append(rnn(size, hidden, batch_first=True))
            if bidirectional:
                self.bwd.append(rnn(size, hidden, batch_first=True))
            size = hidden * (2 if bidirectional else 1)
            if layer < layers - 1:
                parts: list[nn.Module] = []
                if layer_norm:
                    parts.append(nn.LayerNorm(size))
                if projection:
                    parts.append(nn.Linear(size, projection))
                    size = projection
                parts.append(nn.Dropout(dropout))
                self.between.append(nn.Sequential(*parts))
        self.output_size = hidden * (2 if bidirectional else 1)
        if init == "orthogonal":
            self._orthogonal_init()

    def _orthogonal_init(self) -> None:
        """Each gate's recurrent matrix orthogonal, biases zero (Keras's default). On yesno's CTC config, 3 of 10 seeds
        stayed on the early plateau with it against 5 of 10 with PyTorch's uniform init (docs/experiments.md)."""
        for rnn in [*self.fwd, *self.bwd]:
            for name, p in rnn.named_parameters():
                if name.startswith("weight_hh"):
                    for gate in p.data.split(self.hidden):
                        nn.init.orthogonal_(gate)
                elif name.startswith("bias"):
                    nn.init.zeros_(p)

    def _reverse(self, x: Tensor, lengths: Tensor) -> Tensor:
        if self.impl == "naive":  # what nn.LSTM(bidirectional=True) does to a padded batch: padding read first
            return x.flip(1)
        return reverse_within_length(x, lengths)

    def _use_packed(self, x: Tensor) -> bool:
        return self.impl == "packed"

    def _run(self, rnn: nn.Module, x: Tensor, lengths: Tensor, state=None):
        if self._use_packed(x):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, state = rnn(packed, state)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            return out, state
        return rnn(x, state)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, F) -> (B, T, output_size); padded steps of the output are zero."""
        mask = lengths_to_mask(lengths, x.shape[1])[..., None]
        for layer, fwd in enumerate(self.fwd):
            out, _ = self._run(fwd, x, lengths)
            if self.bidirectional:
                rev, _ = self._run(self.bwd[layer], self._reverse(x, lengths), lengths)
                out = torch.cat([out, self._reverse(rev, lengths)], dim=-1)
            x = out if self.impl == "naive" else out.masked_fill(~mask, 0.0)
            if layer < len(self.between):
                x = self.between[layer](x)
                x = x if self.impl == "naive" else x.masked_fill(~mask, 0.0)
        return x

    def step(self, x: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        """Streaming: run a chunk (B, t, F) of a unidirectional encoder from `state`; returns (out, new state)."""
        if self.bidirectional:
            raise ValueError("a bidirectional RNN reads the future and cannot stream; use bidirectional: false")
        state = state or [None] * len(self.fwd)
        new_state = []
        for layer, fwd in enumerate(self.fwd):
            x, s = fwd(x, state[layer])
            new_state.append(s)
            if layer < len(self.between):
                x = self.between[layer](x)
        return x, new_state
