"""Constraints on a CTC beam search: each scores a prefix's next token (-inf forbids it) and its end. An allowed
vocabulary, and a grammar of token patterns compiled to an automaton (Thompson's construction)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import SpecrnnError

NEG = -np.inf


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
