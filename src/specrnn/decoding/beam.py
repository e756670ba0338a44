"""Prefix beam search for CTC (Hannun et al. 2014), vectorised over prefixes x tokens and run one step at a time,
so a stream decodes as it goes and ends where the offline decoding does; `Decoding` says greedy or beam, with which
constraints."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SpecrnnError
from .constraints import Constraint, Grammar, Vocabulary
from .greedy import GreedyCTC
from .ngram import NGram, NGramPrior

NEG = -np.inf


@dataclass
class Decoding:
    """How a CTC model's frame scores become tokens: `beam` None is greedy best path; else prefix beam search over
    `beam` prefixes, scored by the constraints too."""

    beam: int | None = None
    constraints: list[Constraint] = field(default_factory=list)

    def __post_init__(self):
        if self.beam is not None and self.beam < 1:
            raise SpecrnnError(f"a beam holds at least one prefix, got {self.beam}")
        if self.constraints and self.beam is None:
            self.beam = 16

    def start(self, blank: int):
        """A decoder for one clip or stream: GreedyCTC or BeamSearch, with `update`, `finish`, `tokens`, `log_p`."""
        return GreedyCTC(blank) if self.beam is None else BeamSearch(blank, self.beam, self.constraints)

    def name(self) -> str:
        if self.beam is None:
            return "greedy"
        kinds = [type(c).__name__.lower() for c in self.constraints]
        return f"beam {self.beam}" + (f" + {', '.join(kinds)}" if kinds else "")

    @classmethod
    def of(cls, tokens: list[str], beam: int | None = None, vocabulary: list[str] | None = None,
           grammar: str | Path | None = None, lm: str | Path | None = None, lm_weight: float = 0.5,
           token_bonus: float = 0.0) -> "Decoding":
        """The decoding that `--beam`, `--vocabulary`, `--grammar`, `--lm`, `--lm-weight` and `--token-bonus` ask for."""
        if (lm_weight != 0.5 or token_bonus) and not lm:
            raise SpecrnnError("--lm-weight and --token-bonus weigh an n-gram prior: give it with --lm FILE.arpa")
        cons: list[Constraint] = []
        if vocabulary:
            cons.append(Vocabulary(vocabulary, tokens))
        if grammar:
            cons.append(Grammar.from_file(grammar, tokens))
        if lm:
            cons.append(NGramPrior(NGram.from_arpa(lm), tokens, lm_weight, token_bonus, str(lm)))
        return cls(beam, cons)


class BeamSearch:
    """Prefix beam search (Hannun et al. 2014) one step at a time. Each prefix carries the log-probability of its
    paths ending in blank and in its last token (so a repeat needs a blank between) and its constraints' score;
    `tokens`/`log_p` are the best prefix so far (a stream's partial transcript) and `finish()` adds the end scores
    (a grammar's whole sequences only, P(</s>)). `results()` ranks the beam: (tokens, probability over the prefix's
    kept paths), the acoustic probability, ranked by it plus the constraints' score."""

    def __init__(self, blank: int, beam: int = 16, constraints: list[Constraint] | tuple = ()):
        self.blank, self.beam, self.constraints = blank, beam, list(constraints)
        self.prefixes: list[tuple] = [()]
        self.pb, self.pt, self.extra = np.zeros(1), np.full(1, NEG), np.zeros(1)
        self.states = [tuple(c.start() for c in self.constraints)]
        self._next: dict = {}
        self.finished = False

    def _scores(self, states: tuple, n_classes: int) -> np.ndarray:
        """The constraints' summed score of each class after a prefix in `states` (the blank's: -inf)."""
        if states not in self._next:
            s = np.zeros(n_classes - 1)
            for c, st in zip(self.constraints, states):
                s = s + c.next(st)
            self._next[states] = np.insert(s, self.blank, NEG)
        return self._next[states]

    def update(self, log_probs) -> None:
        """More steps: (t, C) frame log-probabilities (or logits: each row is log-softmaxed)."""
        lp_all = np.asarray(log_probs, dtype=np.float64)
        if lp_all.ndim != 2 or not len(lp_all):
            return
        lp_all = lp_all - np.logaddexp.reduce(lp_all, axis=1, keepdims=True)
        for lp in lp_all:
            self._step(lp)

    def _step(self, lp: np.ndarray) -> None:
        C, B = len(lp), len(self.prefixes)
        last = np.array([p[-1] if p else -1 for p in self.prefixes])
        has = last >= 0
        total = np.logaddexp(self.pb, self.pt)
        same_pb = total + lp[self.blank]
        same_pt = np.where(has, self.pt + lp[np.maximum(last, 0)], NEG)
        ext = total[:, None] + lp[None, :]
        rows = np.nonzero(has)[0]
        ext[rows, last[rows]] = self.pb[rows] + lp[last[rows]]  # the same token again needs a blank between
        cons = np.stack([self._scores(s, C) for s in self.states]) if self.constraints else np.zeros((B, C))
        ext[:, self.blank] = NEG
        ext = np.where(np.isfinite(cons), ext, NEG)
        index = {p: i for i, p in enumerate(self.prefixes)}
        for j, p in enumerate(self.prefixes):  # an extension that is already in the beam joins it
            b = index.get(p[:-1]) if p else None
            if b is not None:
                same_pt[j] = np.logaddexp(same_pt[j], ext[b, p[-1]])
                ext[b, p[-1]] = NEG
        ext_extra = self.extra[:, None] + np.where(np.isfinite(cons), cons, 0.0)
        rank = np.concatenate([np.logaddexp(same_pb, same_pt) + self.extra, (ext + ext_extra).ravel()])
        k = min(self.beam, int(np.isfinite(rank).sum()))
        if not k:  # no path can go on (cannot happen with finite scores): keep the beam as it was
            return
        keep = np.argpartition(-rank, k - 1)[:k] if k < len(rank) else np.arange(len(rank))
        keep = keep[np.isfinite(rank[keep])]
        keep = keep[np.lexsort((keep, -rank[keep]))]  # best first; ties in a fixed order
        prefixes, pb, pt, extra, states = [], [], [], [], []
        for i in keep.tolist():
            if i < B:
                prefixes.append(self.prefixes[i])
                pb.append(same_pb[i]), pt.append(same_pt[i]), extra.append(self.extra[i]), states.append(self.states[i])
            else:
                b, c = divmod(i - B, C)
                prefixes.append(self.prefixes[b] + (c,))
                pb.append(NEG), pt.append(ext[b, c]), extra.append(ext_extra[b, c])
                states.append(tuple(con.advance(st, c) for con, st in zip(self.constraints, self.states[b])))
        self.prefixes, self.states = prefixes, states
        self.pb, self.pt, self.extra = np.array(pb), np.array(pt), np.array(extra)

    def _ranked(self, final: bool) -> list[tuple[tuple, float, float]]:
        """(prefix, acoustic log-probability, ranking score) best first; with `final` only those that may end."""
        acoustic = np.logaddexp(self.pb, self.pt)
        out = []
        for p, a, e, st in zip(self.prefixes, acoustic, self.extra, self.states):
            end = sum(c.final(s) for c, s in zip(self.constraints, st)) if final else 0.0
            if np.isfinite(a + e + end):
                out.append((p, float(a), float(a + e + end)))
        return sorted(out, key=lambda r: -r[2])

    def finish(self) -> None:
        self.finished = True

    def results(self) -> list[tuple[list[int], float]]:
        """The beam's sequences that may end, best first: (token indices, acoustic probability)."""
        return [(list(p), math.exp(a)) for p, a, _ in self._ranked(True)]

    @property
    def tokens(self) -> list[int]:
        ranked = self._ranked(self.finished)
        return list(ranked[0][0]) if ranked else []

    @property
    def log_p(self) -> float:
        ranked = self._ranked(self.finished)
        return ranked[0][1] if ranked else NEG
