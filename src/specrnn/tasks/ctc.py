"""Sequence recognition without alignments (CTC, Graves et al. 2006): a clip's label is a sequence of tokens
separated by spaces ("yes no no yes"); a frame head scores every token and a blank at each RNN step, and the CTC
loss sums over every alignment of the sequence to the steps. Greedy decoding: the best class per step, repeats
merged, blanks dropped."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..decoding.greedy import greedy_decode
from ..evaluation import edit_distance
from .base import Task


def token_names(labels: list[str]) -> list[str]:
    """The sorted vocabulary of space-separated token sequences."""
    return sorted({t for lab in labels for t in lab.split()})


def encode_sequences(labels: list[str], tokens: list[str]) -> np.ndarray:
    """(N, S) token indices, each row padded with -1 to the longest sequence."""
    index = {t: i for i, t in enumerate(tokens)}
    rows = [[index[t] for t in lab.split()] for lab in labels]
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def steps_needed(target: np.ndarray) -> int:
    """The fewest RNN steps that can emit `target` (-1 padded): a step per token, and a blank between repeats."""
    t = target[target >= 0]
    return int(len(t) + np.sum(t[1:] == t[:-1]))


def prefix_beam_search(log_probs: np.ndarray, blank: int, beam: int = 8) -> list[tuple[list[int], float]]:
    """The most probable token sequences of one clip's (T, C) frame log-probabilities, each with its probability
    summed over every path that collapses to it (best path decoding scores one path only); most probable first,
    at most `beam` of them. Exact when `beam` covers every prefix (tested against enumerating all paths); a narrower
    beam prunes prefixes, so a sequence may be missed or get less than its probability. (`decoding.BeamSearch`,
    which also streams and takes constraints.)"""
    from ..decoding.beam import BeamSearch

    search = BeamSearch(blank, beam)
    search.update(log_probs)
    return search.results()


def path_spans(path: np.ndarray, blank: int) -> list[tuple[int, int, int]]:
    """(token, first step, last step) of each token a best path emits: a run of one non-blank class is one token
    (a repeat needs a blank between, as in `collapse`)."""
    spans, path = [], np.asarray(path)
    for t, k in enumerate(path.tolist()):
        if k == blank:
            continue
        if t and path[t - 1] == k:
            spans[-1] = (k, spans[-1][1], t)
        else:
            spans.append((k, t, t))
    return spans


def forced_align(log_probs: np.ndarray, target: list[int], blank: int) -> list[tuple[int, int, int]]:
    """Viterbi forced alignment of a known token sequence to one clip's (T, C) frame log-probabilities: the most
    probable path that collapses to `target`, as (token, first step, last step) per token. Raises ValueError when
    the clip has too few steps for the sequence."""
    ext = [blank]
    for k in target:
        ext += [k, blank]
    T, S = len(log_probs), len(ext)
    if T < steps_needed(np.asarray(target, dtype=np.int64)) or not target:
        raise ValueError(f"{T} steps cannot hold {len(target)} tokens" if target else "an empty sequence has no tokens to align")
    score = np.full((T, S), -np.inf)
    back = np.zeros((T, S), dtype=np.int64)
    score[0, :2] = log_probs[0, ext[:2]]
    ext_a = np.asarray(ext)
    skip = np.zeros(S, dtype=bool)  # s-2 -> s allowed: a token unlike the one two states back
    skip[2:] = (ext_a[2:] != blank) & (ext_a[2:] != ext_a[:-2])
    for t in range(1, T):
        prev = score[t - 1]
        cands = np.stack([prev, np.r_[-np.inf, prev[:-1]], np.where(skip, np.r_[-np.inf, -np.inf, prev[:-2]], -np.inf)])
        back[t] = cands.argmax(0)
        score[t] = cands.max(0) + log_probs[t, ext_a]
    s = S - 1 if score[-1, S - 1] >= score[-1, S - 2] else S - 2
    states = [s]
    for t in range(T - 1, 0, -1):
        s -= int(back[t, s])
        states.append(s)
    states.reverse()
    spans: dict[int, list[int]] = {}
    for t, st in enumerate(states):
        if st % 2:  # a token state: token (st - 1) / 2 of the target
            spans.setdefault(st // 2, [t, t])[1] = t
    return [(target[i], a, b) for i, (a, b) in sorted(spans.items())]


def unpad(targets: np.ndarray | Tensor) -> list[list[int]]:
    rows = targets.cpu().numpy() if isinstance(targets, Tensor) else targets
    return [[int(t) for t in row if t >= 0] for row in rows]


class CTCTask(Task):
    """Token sequences from frame outputs; the blank is the last output (index len(tokens))."""

    name = "ctc"
    sequence = True
    unit = "tokens"
    headline = ("token_error_rate", "token error rate")
    criterion = "validation token error rate"
    multilabel = False

    def __init__(self, tokens: list[str]):
        self.classes, self.blank = tokens, len(tokens)

    @property
    def n_outputs(self) -> int:
        return len(self.classes) + 1

    def loss(self, outputs, targets: Tensor, reduction: str = "mean", smoothing: bool = True) -> Tensor:
        """CTC loss per clip (mean over the batch, or the sum); `smoothing` does not apply."""
        frames, lengths = outputs
        log_probs = F.log_softmax(frames.float(), -1).transpose(0, 1)  # (T, B, C)
        target_lengths = (targets >= 0).sum(1)
        loss = F.ctc_loss(log_probs, targets.clamp_min(0), lengths.to(log_probs.device), target_lengths, blank=self.blank,
                          reduction="sum", zero_infinity=True)
        return loss / targets.shape[0] if reduction == "mean" else loss

    def correct(self, outputs, targets: Tensor) -> Tensor:
        """Tokens right: reference tokens minus edits, per clip at least 0 (so validation accuracy is 1 - token error
        rate, a finer guide for early stopping than whole sequences)."""
        frames, lengths = outputs
        hyp = greedy_decode(frames, lengths, self.blank)
        return torch.tensor(sum(max(0, len(r) - edit_distance(h, r)) for h, r in zip(hyp, unpad(targets))))

    def units(self, targets: Tensor) -> int:
        """What validation accuracy counts: reference tokens."""
        return int((targets >= 0).sum())

    def evaluate(self, predictor, fs) -> dict:
        from ..evaluation import sequence_metrics

        return sequence_metrics(unpad(fs.targets), [seq for seq, _ in predictor.decode(fs.features)], self.classes, fs.paths)

    def check(self, model, sets: dict, cfg) -> None:
        """Each clip needs as many encoder steps as its token sequence (a blank between repeated tokens); fewer, and
        CTC cannot emit it: say which file, before training. Training clips are checked at the fastest speed
        perturbation (`augment.speed`), which shortens them."""
        from ..augment import stretched_lengths
        from ..errors import SpecrnnError

        speed = cfg.augment.speed
        for name, fs in sets.items():
            lengths = torch.as_tensor(fs.lengths)
            if name == "train" and speed > 0:
                lengths = stretched_lengths(lengths, 1 + speed)
            steps = model.output_lengths(lengths).numpy() if len(fs) else []
            for path, n, target in zip(fs.paths, steps, fs.targets):
                if n < steps_needed(target):
                    faster = f" when played {1 + speed:g}x faster (augment.speed)" if name == "train" and speed > 0 else ""
                    raise SpecrnnError(f"{path}: {n} encoder steps{faster} cannot hold its {steps_needed(target)}-step "
                                       "token sequence (CTC); lower model.stack, the CNN's time strides or augment.speed")

    @classmethod
    def summary_lines(cls, name: str, m: dict) -> list[str]:
        lines = [f"{name:>4} sequences right {100 * m['accuracy']:6.2f}%   token error rate "
                 f"{100 * m['token_error_rate']:6.2f}%   (n={m['n']})"]
        if m.get("empty_decodings", 0) > m["n"] // 2:
            lines.append(f"     warning: {m['empty_decodings']} of {m['n']} {name} clips decode to nothing "
                         "(the blank wins every step): the model has not learnt the tokens yet; train longer "
                         "(train.max_epochs) or check the learning rate")
        return lines

    @classmethod
    def score(cls, split_metrics: dict) -> float:
        """Token accuracy, 1 - token error rate (higher is better, like a classifier's accuracy)."""
        return 1.0 - float(split_metrics["token_error_rate"])

    @classmethod
    def selection_value(cls, val_metrics: dict) -> float:
        return float(val_metrics["token_error_rate"])
