"""A token n-gram prior for CTC beam search: ARPA files (KenLM's, SRILM's) read and written, estimation from
transcripts by absolute discounting with backoff, and the constraint that adds its weighted log-probability."""
from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import SpecrnnError
from .constraints import Constraint

NEG = -np.inf
LN10 = math.log(10.0)


class NGram:
    """A backoff n-gram model over tokens (ARPA: log10 probabilities and backoff weights, `<s>` and `</s>` the
    sequence's start and end). `log_prob(context, token)` is the natural log of P(token | last n-1 of context)."""

    def __init__(self, grams: dict[tuple, tuple[float, float]], order: int):
        self.grams, self.order = grams, order  # (w1..wk) -> (log10 p, log10 backoff)
        self.vocabulary = {g[0] for g in grams if len(g) == 1}

    def log_prob(self, context: tuple, token: str) -> float:
        context = context[-(self.order - 1):] if self.order > 1 else ()
        backoff = 0.0
        while True:
            hit = self.grams.get(context + (token,))
            if hit is not None:
                return (backoff + hit[0]) * LN10
            if not context:
                return NEG
            backoff += self.grams.get(context, (0.0, 0.0))[1]
            context = context[1:]

    @classmethod
    def from_arpa(cls, path: str | Path) -> "NGram":
        grams: dict[tuple, tuple[float, float]] = {}
        order, section = 0, None
        try:
            lines = Path(path).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SpecrnnError(f"{path}: cannot read the n-gram file ({e})") from None
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("ngram ") or line in ("\\data\\", "\\end\\"):
                continue
            m = re.fullmatch(r"\\(\d+)-grams:", line)
            if m:
                section = int(m.group(1))
                order = max(order, section)
                continue
            parts = line.split()
            if section is None or len(parts) not in (section + 1, section + 2):
                raise SpecrnnError(f"{path}, line {n}: not an ARPA n-gram line ('{line[:60]}')")
            try:
                grams[tuple(parts[1 : section + 1])] = (float(parts[0]), float(parts[section + 1]) if len(parts) > section + 1 else 0.0)
            except ValueError:
                raise SpecrnnError(f"{path}, line {n}: not an ARPA n-gram line ('{line[:60]}')") from None
        if not order:
            raise SpecrnnError(f"{path}: no n-grams (an ARPA file has a \\1-grams: section)")
        return cls(grams, order)

    def to_arpa(self, path: str | Path) -> None:
        """Write the ARPA file (to a temporary file, then renamed)."""
        from ..files import atomic_write_text

        by_order = defaultdict(list)
        for g, v in self.grams.items():
            by_order[len(g)].append((g, v))
        out = ["\\data\\"] + [f"ngram {k}={len(by_order[k])}" for k in range(1, self.order + 1)] + [""]
        for k in range(1, self.order + 1):
            out.append(f"\\{k}-grams:")
            for g, (p, b) in sorted(by_order[k]):
                out.append(f"{p:.6f}\t{' '.join(g)}" + (f"\t{b:.6f}" if k < self.order else ""))
            out.append("")
        atomic_write_text(path, "\n".join(out + ["\\end\\", ""]))


def estimate_ngram(sequences: list[list[str]], order: int = 2, discount: float = 0.5) -> NGram:
    """A backoff n-gram of token sequences by absolute discounting: each seen n-gram (above unigrams) gives up
    `discount` of its count to the lower order, and the backoff weights make each history's probabilities sum to
    one. A history after which every token was seen keeps all its mass (there is nothing left to back off to)."""
    if order < 1:
        raise SpecrnnError(f"an n-gram's order is at least 1, got {order}")
    if not sequences:
        raise SpecrnnError("an n-gram needs at least one token sequence")
    counts: list[dict[tuple, int]] = [{}] + [defaultdict(int) for _ in range(order)]
    for seq in sequences:
        padded = ["<s>", *seq, "</s>"]
        for i in range(1, len(padded)):
            for k in range(1, min(order, i + 1) + 1):
                counts[k][tuple(padded[i - k + 1 : i + 1])] += 1
    total = sum(counts[1].values())
    logp = {g: math.log(c / total) for g, c in counts[1].items()}  # unigrams: maximum likelihood (every token is seen)
    backoff: dict[tuple, float] = {}  # natural log
    for k in range(2, order + 1):
        by_history: dict[tuple, dict[str, int]] = defaultdict(dict)
        for g, c in counts[k].items():
            by_history[g[:-1]][g[-1]] = c
        for h, nxt in by_history.items():
            n = sum(nxt.values())
            d = discount if len(nxt) < len(counts[1]) else 0.0
            probs = {w: (c - d) / n for w, c in nxt.items()}
            lower = sum(math.exp(_lower(logp, backoff, h[1:], w)) for w in nxt)
            left = 1.0 - sum(probs.values())
            backoff[h] = math.log(left / (1.0 - lower)) if left > 1e-12 and 1.0 - lower > 1e-12 else -99.0 * LN10
            logp.update({h + (w,): math.log(p) for w, p in probs.items()})
    grams = {g: (lp / LN10, backoff.get(g, 0.0) / LN10) for g, lp in logp.items()}
    grams[("<s>",)] = (-99.0, backoff.get(("<s>",), 0.0) / LN10)
    return NGram(grams, order)


def _lower(logp: dict, backoff: dict, h: tuple, w: str) -> float:
    """ln P(w | h) from the orders estimated so far, backing off through their weights."""
    weight = 0.0
    while True:
        if h + (w,) in logp:
            return weight + logp[h + (w,)]
        if not h:
            return NEG
        weight += backoff.get(h, 0.0)
        h = h[1:]


class NGramPrior(Constraint):
    """An n-gram's log-probability of each next token times `weight`, plus `bonus` per token (which offsets the
    prior's pull towards short sequences); ending scores P(</s>). The state is the last n-1 tokens."""

    def __init__(self, lm: NGram, tokens: list[str], weight: float = 0.5, bonus: float = 0.0, source: str = "n-gram"):
        missing = sorted(set(tokens) - lm.vocabulary)
        if missing and "<unk>" not in lm.vocabulary:
            raise SpecrnnError(f"{source}: the model's tokens {missing} are not in the n-gram's vocabulary")
        self.lm, self.tokens, self.weight, self.bonus = lm, tokens, weight, bonus
        self.names = [t if t in lm.vocabulary else "<unk>" for t in tokens]
        self._cache: dict = {}

    def start(self):
        return ("<s>",)

    def next(self, state) -> np.ndarray:
        if state not in self._cache:
            self._cache[state] = np.array([self.weight * self.lm.log_prob(state, t) + self.bonus for t in self.names])
        return self._cache[state]

    def advance(self, state, token: int):
        return (state + (self.names[token],))[-max(1, self.lm.order - 1):]

    def final(self, state) -> float:
        return self.weight * self.lm.log_prob(state, "</s>")


def ngram_command(data: str | Path, out: str | Path, order: int = 2, split: str | None = "train", discount: float = 0.5) -> str:
    """`specrnn ngram`: estimate an n-gram of a manifest's token-sequence labels (its `split` rows when it has a
    split column) and write it as ARPA; returns what was written."""
    from ..data.manifest import load_manifest

    man = load_manifest(data)
    rows = man.where_split(split) if split and man.splits is not None else man
    seqs = [lab.split() for lab in rows.labels]
    if not seqs:
        raise SpecrnnError(f"{data}: no rows in split '{split}' to estimate an n-gram from")
    estimate_ngram(seqs, order, discount).to_arpa(out)
    return (f"wrote {out}: a {order}-gram of {len(seqs)} token sequences ({split if rows is not man else 'all'} rows of "
            f"{data}); decode with: specrnn predict RUN FILES --lm {out}")
