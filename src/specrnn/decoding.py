"""CTC decoding beyond the best path: prefix beam search, vectorised over prefixes x tokens and run one step at a
time (so a stream decodes as it goes and ends where the offline decoding does), with optional constraints that
score each next token of a prefix:

- `Vocabulary`: only these tokens;
- `Grammar`: token patterns from a file (`yes|no{8}`, `(one|two|three)+`, ...): only the sequences they match;
- `NGram`: a token n-gram prior from an ARPA file (as KenLM or SRILM write it, or `estimate_ngram` from
  transcripts), added to the acoustic score with a weight (shallow fusion) and a per-token bonus.

Greedy best-path decoding (`tasks.ctc.GreedyCTC`) stays the fast default; `Decoding` says which one to run."""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SpecrnnError

NEG = -np.inf
LN10 = math.log(10.0)


class Constraint:
    """Scores a prefix's next token. `start()` is the empty prefix's state, `next(state)` the additive log-score of
    each token after it (-inf forbids one), `advance(state, token)` the state after a token, and `final(state)`
    the score of ending there (-inf: not a whole sequence). States are hashable, so scores are cached per state."""

    def start(self):
        return None

    def next(self, state) -> np.ndarray:
        raise NotImplementedError

    def advance(self, state, token: int):
        return None

    def final(self, state) -> float:
        return 0.0


class Vocabulary(Constraint):
    """Only the listed tokens (the others of the model are never emitted)."""

    def __init__(self, allowed: list[str], tokens: list[str]):
        unknown = sorted(set(allowed) - set(tokens))
        if unknown:
            raise SpecrnnError(f"vocabulary: tokens {unknown} are not in this model's tokens {tokens}")
        self.scores = np.where(np.isin(tokens, list(allowed)), 0.0, NEG)

    def next(self, state) -> np.ndarray:
        return self.scores


class Grammar(Constraint):
    """Token sequences that match one of a file's patterns (one a line, `#` starts a comment). A pattern is tokens
    separated by spaces with `a|b` (either), `( )` (grouping), `?` `*` `+` and `{m}` `{m,n}` `{m,}` (repeats) and
    `<any>` (any token): `(yes|no){8}` is eight words of yes or no. Compiled to an NFA (Thompson's construction);
    a prefix's state is the set of NFA states it reaches."""

    ANY = -1

    def __init__(self, patterns: list[str], tokens: list[str], source: str = "grammar"):
        self.tokens, self.index, self.source = tokens, {t: i for i, t in enumerate(tokens)}, source
        self.eps: list[list[int]] = []
        self.moves: list[list[tuple[int, int]]] = []
        self.begin = self._state()
        self.accept = self._state()
        lines = [(n, p.split("#")[0].strip()) for n, p in enumerate(patterns, 1)]
        lines = [(n, p) for n, p in lines if p]
        if not lines:
            raise SpecrnnError(f"{source}: no patterns (one token pattern a line, e.g. '(yes|no){{8}}')")
        for n, p in lines:
            try:
                ast, rest = self._alternation(self._lex(p), 0)
                if rest != len(self._lex(p)):
                    raise ValueError(f"unexpected '{self._lex(p)[rest]}'")
            except ValueError as e:
                raise SpecrnnError(f"{source}, line {n}: {e} in '{p}'") from None
            s, t = self._build(ast)
            self.eps[self.begin].append(s)
            self.eps[t].append(self.accept)
        self._cache: dict = {}

    @classmethod
    def from_file(cls, path: str | Path, tokens: list[str]) -> "Grammar":
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise SpecrnnError(f"{path}: cannot read the grammar ({e})") from None
        return cls(text.splitlines(), tokens, str(path))

    # parsing: alternation := sequence ('|' sequence)*; sequence := item*; item := atom repeat*
    @staticmethod
    def _lex(p: str) -> list[str]:
        return re.findall(r"\{[^}]*\}|[()|?*+]|[^\s()|?*+{}]+|\S", p)

    def _alternation(self, toks: list[str], i: int):
        options = []
        while True:
            seq, i = self._sequence(toks, i)
            options.append(seq)
            if i < len(toks) and toks[i] == "|":
                i += 1
                continue
            return ("alt", options), i

    def _sequence(self, toks: list[str], i: int):
        items = []
        while i < len(toks) and toks[i] not in ("|", ")"):
            t = toks[i]
            if t == "(":
                node, i = self._alternation(toks, i + 1)
                if i >= len(toks) or toks[i] != ")":
                    raise ValueError("a '(' without its ')'")
                i += 1
            elif t in ("?", "*", "+") or t.startswith("{"):
                raise ValueError(f"'{t}' follows nothing")
            else:
                if t != "<any>" and t not in self.index:
                    raise ValueError(f"'{t}' is not one of this model's tokens {self.tokens}")
                node = ("sym", self.ANY if t == "<any>" else self.index[t])
                i += 1
            while i < len(toks) and (toks[i] in ("?", "*", "+") or toks[i].startswith("{")):
                node, i = ("rep", node, *self._bounds(toks[i])), i + 1
            items.append(node)
        if not items:
            raise ValueError("an empty alternative")
        return ("seq", items), i

    @staticmethod
    def _bounds(op: str) -> tuple[int, int | None]:
        if op in ("?", "*", "+"):
            return {"?": (0, 1), "*": (0, None), "+": (1, None)}[op]
        m = re.fullmatch(r"\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}", op)
        if not m:
            raise ValueError(f"'{op}' is not a repeat ({{m}}, {{m,n}} or {{m,}})")
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
        if hi is not None and hi < lo or hi == 0:
            raise ValueError(f"'{op}' repeats nothing")
        return lo, hi

    def _state(self) -> int:
        self.eps.append([])
        self.moves.append([])
        return len(self.eps) - 1

    def _build(self, node) -> tuple[int, int]:
        """A fragment (start, end) of the NFA for a parsed node."""
        kind = node[0]
        if kind == "sym":
            s, t = self._state(), self._state()
            self.moves[s].append((node[1], t))
            return s, t
        if kind in ("seq", "alt"):
            parts = [self._build(n) for n in node[1]]
            if kind == "seq":
                for (_, a), (b, _) in zip(parts, parts[1:]):
                    self.eps[a].append(b)
                return parts[0][0], parts[-1][1]
            s, t = self._state(), self._state()
            for a, b in parts:
                self.eps[s].append(a)
                self.eps[b].append(t)
            return s, t
        _, inner, lo, hi = node
        s = t = self._state()
        for _ in range(lo):  # the required copies
            a, b = self._build(inner)
            self.eps[t].append(a)
            t = b
        if hi is None:  # then any number more
            a, b = self._build(inner)
            end = self._state()
            self.eps[t] += [a, end]
            self.eps[b] += [a, end]
            return s, end
        for _ in range(hi - lo):  # then up to hi - lo optional copies
            a, b = self._build(inner)
            end = self._state()
            self.eps[t] += [a, end]
            self.eps[b].append(end)
            t = end
        return s, t

    def _closure(self, states) -> frozenset:
        seen, todo = set(states), list(states)
        while todo:
            for n in self.eps[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return frozenset(seen)

    def start(self):
        return self._closure([self.begin])

    def next(self, state) -> np.ndarray:
        out = np.full(len(self.tokens), NEG)
        for s in state:
            for sym, _ in self.moves[s]:
                if sym == self.ANY:
                    out[:] = 0.0
                else:
                    out[sym] = 0.0
        return out

    def advance(self, state, token: int):
        key = (state, token)
        if key not in self._cache:
            self._cache[key] = self._closure([t for s in state for sym, t in self.moves[s] if sym in (token, self.ANY)])
        return self._cache[key]

    def final(self, state) -> float:
        return 0.0 if self.accept in state else NEG

    def matches(self, sequence: list[str]) -> bool:
        """Whether a whole token sequence is in the grammar."""
        state = self.start()
        for t in sequence:
            if t not in self.index or not np.isfinite(self.next(state)[self.index[t]]):
                return False
            state = self.advance(state, self.index[t])
        return self.accept in state


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
        from .files import atomic_write_text

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
        from .tasks.ctc import GreedyCTC

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
