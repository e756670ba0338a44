"""Greedy (best-path) CTC decoding: the best class per step, repeats merged, blanks dropped; over a padded batch,
one clip, or a stream one chunk at a time."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # tensors come in; torch itself is not needed to decode them
    from torch import Tensor


def collapse(path: np.ndarray, blank: int, prev: int | None = None) -> list[int]:
    """The CTC rule on a best path: merge repeats, drop blanks. `prev`: the step before `path` (a stream's last
    step), so a repeat across two chunks merges as it would in one."""
    path = np.asarray(path)
    keep = np.ones(len(path), dtype=bool)
    keep[1:] = path[1:] != path[:-1]
    if prev is not None and len(path):
        keep[0] = path[0] != prev
    return [int(k) for k in path[keep] if k != blank]


def greedy_decode(logits: Tensor, lengths: Tensor, blank: int) -> list[list[int]]:
    """Best path: (B, T, C) frame logits -> token indices per clip, over each clip's real steps only."""
    best = logits.argmax(-1).cpu().numpy()
    return [collapse(row[: int(n)], blank) for row, n in zip(best, lengths.cpu().numpy())]


def best_path(log_probs: np.ndarray, blank: int) -> tuple[list[int], float]:
    """One clip's (T, C) frame log-probabilities -> the best path's tokens and that path's probability."""
    return collapse(log_probs.argmax(-1), blank), float(np.exp(log_probs.max(-1).astype(np.float64).sum()))


class GreedyCTC:
    """Best-path decoding one step at a time (streaming): the same rule as `greedy_decode`, carried across chunks,
    so the running sequence never takes back a token; `log_p` is the best path's log-probability so far."""

    def __init__(self, blank: int):
        self.blank, self.prev, self.tokens, self.log_p = blank, None, [], 0.0

    def update(self, frame_logits: Tensor | np.ndarray) -> None:  # (t, C)
        z = np.asarray(frame_logits.detach().cpu() if hasattr(frame_logits, "detach") else frame_logits, dtype=np.float32)
        if not len(z):
            return
        path = z.argmax(-1)
        best = -np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1))  # the best class's log-softmax
        self.log_p += float(best.astype(np.float64).sum())
        self.tokens += collapse(path, self.blank, self.prev)
        self.prev = int(path[-1])

    def finish(self) -> None:
        """End of stream (the best path needs nothing more)."""
