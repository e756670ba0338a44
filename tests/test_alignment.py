"""CTC token timings: best-path spans and Viterbi forced alignment on hand-made score matrices with known answers,
and a trained model's timings in `predict --json` and `Predictor.align`."""
from __future__ import annotations

import numpy as np
import pytest

from specrnn.decoding.greedy import collapse
from specrnn.tasks.ctc import forced_align, path_spans

BLANK = 3  # tokens 0, 1, 2; blank last, as the models order them


def scores(path: list[int], sure: float = 0.9) -> np.ndarray:
    """(T, 4) log-probabilities whose best class at step t is path[t]."""
    p = np.full((len(path), 4), (1 - sure) / 3)
    p[np.arange(len(path)), path] = sure
    return np.log(p)


def test_path_spans_follow_collapse_and_keep_repeats_apart():
    path = [3, 0, 0, 3, 0, 1, 1, 1, 3, 3, 2]
    assert path_spans(path, BLANK) == [(0, 1, 2), (0, 4, 4), (1, 5, 7), (2, 10, 10)]
    assert [k for k, _, _ in path_spans(path, BLANK)] == collapse(np.array(path), BLANK)


def test_forced_alignment_finds_the_known_positions():
    path = [3, 3, 0, 0, 3, 1, 3, 3, 1, 1, 3]  # tokens 0 at 2-3, 1 at 5, 1 again at 8-9
    assert forced_align(scores(path), [0, 1, 1], BLANK) == [(0, 2, 3), (1, 5, 5), (1, 8, 9)]


def test_forced_alignment_follows_the_transcript_not_the_best_path():
    path = [3, 0, 0, 3, 2, 2, 3]  # the best path says "0 2"; the transcript says "0 1": token 1 must go where 2 was
    got = forced_align(scores(path), [0, 1], BLANK)
    assert got[0] == (0, 1, 2) and got[1][0] == 1 and 3 <= got[1][1] <= got[1][2] <= 6
    assert forced_align(scores([0, 3, 0]), [0, 0], BLANK) == [(0, 0, 0), (0, 2, 2)]  # a repeat needs its blank


def test_forced_alignment_refuses_a_sequence_too_long_for_the_clip():
    with pytest.raises(ValueError, match="cannot hold"):
        forced_align(scores([0, 0]), [0, 0], BLANK)  # two steps: no room for the blank between the repeats
    with pytest.raises(ValueError, match="empty"):
        forced_align(scores([0]), [], BLANK)


def test_a_trained_model_gives_timings_in_seconds(tmp_path):
    """A tone-sequence clip whose tones sit at known times: predict's timings and forced alignment find them."""
    import specrnn
    from specrnn.inference import Predictor

    from .conftest import tone, write

    rng = np.random.default_rng(0)
    freqs = {"lo": 400, "hi": 2500}
    rows = ["path,label"]

    def clip(name, seq):
        parts, where, t = [np.zeros(1600, np.float32)], [], 0.1
        for tok in seq:
            d = rng.uniform(0.15, 0.25)
            parts += [tone(freqs[tok], d, seed=len(rows)), np.zeros(int(rng.uniform(0.1, 0.2) * 16000), np.float32)]
            where.append((t, t + d))
            t += d + len(parts[-1]) / 16000
        write(tmp_path / name, np.concatenate(parts))
        return where

    for i in range(60):
        seq = [("lo", "hi")[j] for j in rng.integers(0, 2, rng.integers(2, 5))]
        clip(f"{i}.wav", seq)
        rows.append(f"{i}.wav,{' '.join(seq)}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    specrnn.train(tmp_path / "m.csv", out=run, overrides={"model.hidden": 32, "model.layers": 1, "train.max_epochs": 25,
                                                           "model.stack": 2, "train.lr": 0.01, "model.normalize": "global",
                                                           "train.patience": 8}, log=lambda *a, **k: None)
    where = clip("probe.wav", ["hi", "lo", "hi"])
    p = Predictor.load(run, device="cpu")
    (pred,) = p.predict([tmp_path / "probe.wav"])
    (aligned,) = p.align([tmp_path / "probe.wav"], ["hi lo hi"])
    assert [t["token"] for t in aligned] == ["hi", "lo", "hi"]
    for t, (a, b) in zip(aligned, where):  # each token inside its tone, give or take two steps
        assert a - 2 * p.step_seconds <= t["start"] <= t["end"] <= b + 2 * p.step_seconds, (t, a, b)
    assert [t["token"] for t in pred.to_dict()["tokens"]] == pred.label.split()
