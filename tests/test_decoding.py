"""CTC decoding (specrnn.decoding): beam search against enumerating every path, with and without constraints
(vocabulary, grammar, n-gram prior); hand-made score matrices with known answers; chunked (streaming) updates equal
one offline update, repeats across chunk boundaries included; the grammar's patterns and the n-gram's estimation,
normalisation and ARPA round trip; the CLI's decoding options on a trained run."""
from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from specrnn.decoding import BeamSearch, Decoding, Grammar, NGram, NGramPrior, Vocabulary, estimate_ngram
from specrnn.errors import SpecrnnError
from specrnn.decoding.greedy import collapse

TOKENS = ["a", "b", "c"]
BLANK = 3


def onehot_log_probs(rows: list[dict[int, float]], C: int = 4) -> np.ndarray:
    """(T, C) log-probabilities from {class: probability} per step (the rest shared by the other classes)."""
    out = np.zeros((len(rows), C))
    for t, r in enumerate(rows):
        rest = (1 - sum(r.values())) / (C - len(r)) if len(r) < C else 0.0
        out[t] = [r.get(c, rest) for c in range(C)]
    return np.log(np.maximum(out, 1e-300))


def exact_sequences(lp: np.ndarray) -> dict[tuple, float]:
    """Every sequence's probability summed over all its paths (enumeration, small T and C only)."""
    T, C = lp.shape
    out: dict[tuple, float] = {}
    for path in itertools.product(range(C), repeat=T):
        seq = tuple(collapse(np.array(path), BLANK))
        out[seq] = out.get(seq, 0.0) + math.exp(sum(lp[t, k] for t, k in enumerate(path)))
    return out


def decode(lp: np.ndarray, beam: int = 1000, constraints=(), chunks: list[int] | None = None) -> BeamSearch:
    s = BeamSearch(BLANK, beam, list(constraints))
    for part in np.split(lp, chunks) if chunks else [lp]:
        s.update(part)
    s.finish()
    return s


def test_beam_search_beats_the_best_path_on_a_hand_made_matrix():
    """Two steps of P(a) = 0.4, P(blank) = 0.6: the best path is blank blank (0.36, nothing), but 'a' has three paths
    (aa, a-, -a: 0.16 + 0.24 + 0.24 = 0.64)."""
    lp = onehot_log_probs([{0: 0.4, BLANK: 0.6}] * 2)
    assert collapse(lp.argmax(-1), BLANK) == []
    s = decode(lp, beam=4)
    assert s.results()[0][0] == [0] and s.results()[0][1] == pytest.approx(0.64)
    assert s.tokens == [0] and math.exp(s.log_p) == pytest.approx(0.64)


def test_a_repeat_needs_a_blank_between_even_across_chunks():
    """a a | a: one 'a'; a - | a: two. The chunk boundary never changes the result."""
    one = onehot_log_probs([{0: 0.97}, {0: 0.97}, {0: 0.97}])
    two = onehot_log_probs([{0: 0.97}, {BLANK: 0.97}, {0: 0.97}])
    for chunks in (None, [2], [1], [1, 2]):
        assert decode(one, 4, chunks=chunks).tokens == [0]
        assert decode(two, 4, chunks=chunks).tokens == [0, 0]


@pytest.mark.parametrize("seed", range(3))
def test_streaming_updates_equal_one_offline_update(seed):
    rng = np.random.default_rng(seed)
    lp = np.log(rng.dirichlet(np.ones(4) * 0.4, size=60))
    grammar = Grammar(["(a|b)+ c?"], TOKENS)
    for cons in ([], [grammar]):
        offline = decode(lp, 8, cons)
        for chunks in ([1, 2, 30], list(range(5, 60, 7))):
            streamed = decode(lp, 8, cons, chunks)
            assert streamed.results() == offline.results()


@pytest.mark.parametrize("seed", range(4))
def test_constrained_beam_search_finds_the_best_allowed_sequence(seed):
    """With a beam wide enough, each constraint's answer is the enumerated best over the sequences it allows."""
    rng = np.random.default_rng(seed)
    lp = np.log(rng.dirichlet(np.ones(4) * 0.7, size=6))
    exact = exact_sequences(lp)
    assert {tuple(s): p for s, p in decode(lp).results()} == pytest.approx(exact, rel=1e-9)

    vocab = Vocabulary(["a", "c"], TOKENS)
    allowed = {s: p for s, p in exact.items() if 1 not in s}
    got = decode(lp, constraints=[vocab]).results()
    assert tuple(got[0][0]) == max(allowed, key=allowed.get) and all(1 not in s for s, _ in got)
    assert got[0][1] == pytest.approx(max(allowed.values()), rel=1e-9)

    grammar = Grammar(["<any>{2}", "c a+"], TOKENS)
    allowed = {s: p for s, p in exact.items() if len(s) == 2 or (len(s) >= 2 and s[0] == 2 and set(s[1:]) == {0})}
    got = decode(lp, constraints=[grammar]).results()
    assert tuple(got[0][0]) == max(allowed, key=allowed.get)
    assert {tuple(s) for s, _ in got} == set(allowed)

    lm = estimate_ngram([["a", "b"], ["a", "b", "b"], ["c"]], order=2)
    prior = NGramPrior(lm, TOKENS, weight=0.8, bonus=0.3)

    def fused(s: tuple) -> float:
        names = ["<s>", *[TOKENS[k] for k in s], "</s>"]
        return math.log(exact[s]) + sum(0.8 * lm.log_prob(tuple(names[:i]), names[i]) for i in range(1, len(names))) + 0.3 * len(s)

    got = decode(lp, constraints=[prior]).results()
    assert tuple(got[0][0]) == max(exact, key=fused)
    assert [tuple(s) for s, _ in got] == sorted(exact, key=lambda s: -fused(s))


def test_a_narrow_beam_ranks_what_it_keeps():
    rng = np.random.default_rng(5)
    lp = np.log(rng.dirichlet(np.ones(4) * 0.5, size=40))
    got = decode(lp, beam=3).results()
    probs = [p for _, p in got]
    assert len(got) == 3 and probs == sorted(probs, reverse=True)


def test_grammar_patterns():
    g = Grammar(["(yes|no){8}  # eight words"], ["no", "yes"])
    assert g.matches("yes no yes no yes no yes no".split()) and not g.matches("yes no".split())
    assert not g.matches(("yes " * 9).split())
    g = Grammar(["<any>{2,3}", "one+ two?", "three{2,}"], ["one", "two", "three"])
    cases = {"one": True, "one two": True, "one one one one two": True, "two two two two": False, "two": False,
             "three three three three": True, "three": False, "two one": True, "": False}
    assert {s: g.matches(s.split()) for s in cases} == cases
    assert not Grammar(["one"], ["one", "two"]).matches(["zzz"])


@pytest.mark.parametrize("pattern, message", [("(yes no", "without its ')'"), ("yes | | no", "empty alternative"),
                                              ("maybe", "'maybe' is not one of this model's tokens"),
                                              ("* yes", "follows nothing"), ("yes{2,1}", "repeats nothing"),
                                              ("yes{x}", "is not a repeat"), ("yes )", "unexpected ')'")])
def test_a_bad_grammar_names_the_file_line_and_problem(tmp_path, pattern, message):
    f = tmp_path / "g.txt"
    f.write_text(f"# yes/no\n{pattern}\n")
    with pytest.raises(SpecrnnError, match=f"g.txt, line 2: .*{re.escape(message)}"):
        Grammar.from_file(f, ["no", "yes"])
    with pytest.raises(SpecrnnError, match="no patterns"):
        Grammar(["# nothing"], ["no"])
    with pytest.raises(SpecrnnError, match="cannot read"):
        Grammar.from_file(tmp_path / "missing.txt", ["no"])


def test_ngram_estimation_normalises_and_survives_an_arpa_round_trip(tmp_path):
    seqs = [s.split() for s in ["a b a", "a a b", "b", "c a b c"]]
    for order in (1, 2, 3):
        lm = estimate_ngram(seqs, order=order)
        histories = {tuple(["<s>", *s, "</s>"][max(0, i - order + 1) : i]) for s in seqs for i in range(1, len(s) + 2)}
        histories |= {("c", "c"), ("b",), ("<s>",)}  # unseen histories back off
        for h in histories:
            assert sum(math.exp(lm.log_prob(h, w)) for w in ["a", "b", "c", "</s>"]) == pytest.approx(1.0, abs=1e-6), h
        lm.to_arpa(tmp_path / f"{order}.arpa")
        again = NGram.from_arpa(tmp_path / f"{order}.arpa")
        for h in histories:
            for w in ["a", "b", "c", "</s>"]:
                assert again.log_prob(h, w) == pytest.approx(lm.log_prob(h, w), abs=1e-5)
    lm = estimate_ngram(seqs, order=2)  # by hand: 'b' is followed by a, </s>, </s>, c (3 of the 4 kinds: discounted)
    assert math.exp(lm.log_prob(("b",), "</s>")) == pytest.approx((2 - 0.5) / 4)


def test_bad_ngram_files_and_vocabularies(tmp_path):
    f = tmp_path / "lm.arpa"
    f.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-0.3 yes\nnot a line at all\n\\end\\\n")
    with pytest.raises(SpecrnnError, match=r"lm.arpa, line 6: not an ARPA n-gram line"):
        NGram.from_arpa(f)
    f.write_text("nothing here\n")
    with pytest.raises(SpecrnnError, match="not an ARPA|no n-grams"):
        NGram.from_arpa(f)
    lm = estimate_ngram([["yes"]], order=1)
    with pytest.raises(SpecrnnError, match=r"tokens \['no'\] are not in the n-gram's vocabulary"):
        NGramPrior(lm, ["no", "yes"])
    with pytest.raises(SpecrnnError, match=r"tokens \['maybe'\] are not in this model's tokens"):
        Vocabulary(["maybe"], ["no", "yes"])
    with pytest.raises(SpecrnnError, match="at least one prefix"):
        Decoding(beam=0)
    assert Decoding(constraints=[Vocabulary(["no"], ["no", "yes"])]).beam == 16  # a constraint needs a beam
