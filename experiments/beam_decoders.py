"""Beam search decoders compared on one trained CTC run's test split: greedy, specrnn's vectorised prefix beam search
(with and without a grammar or an n-gram prior), the per-prefix Python loop it replaced, and pyctcdecode's beam
search (no language model). Accuracy (word and sequence error) and decode seconds per second of audio, medians of
repeats.

pyctcdecode 0.5 pins numpy < 2, which the project's onnx stack (ml-dtypes) refuses, so it runs in its own venv on
log-probabilities dumped by the project's:

    python -m experiments.beam_decoders dump RUN /tmp/lp.npz            # the project's venv
    /tmp/pyctcvenv/bin/python experiments/beam_decoders.py compare /tmp/lp.npz OUT.json   # numpy<2 + pyctcdecode
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def dump(run: str, out: str) -> None:
    from specrnn.data.dataset import model_input_set
    from specrnn.data.manifest import load_manifest
    from specrnn.inference import Predictor
    from specrnn.tasks.ctc import unpad

    p = Predictor.load(run, device="cpu")
    man = load_manifest(Path(run) / "split.csv")
    fs = model_input_set(man, p.cfg, p.classes, "test", "bench", "sequence")
    lps = p.frame_log_probs(fs.features)
    train = [lab.split() for lab, s in zip(man.labels, man.splits) if s == "train"]
    audio_s = sum(len(f) for f in fs.features) * p.cfg.features.hop_length / p.cfg.features.sample_rate
    np.savez(out, lp=np.concatenate(lps), lengths=[len(x) for x in lps], classes=p.classes, audio_s=audio_s,
             targets=json.dumps(unpad(fs.targets)), train=json.dumps(train))
    print(f"wrote {out}: {len(lps)} clips, {audio_s:.1f} s of audio")


def _errors(refs: list[list[int]], hyps: list[list[int]]) -> tuple[float, float]:
    def dist(a, b):
        d = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            prev, d[0] = d[0], i
            for j, y in enumerate(b, 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
        return d[-1]

    return (sum(dist(r, h) for r, h in zip(refs, hyps)) / sum(map(len, refs)),
            sum(r != h for r, h in zip(refs, hyps)) / len(refs))


def loop_beam(log_probs: np.ndarray, blank: int, beam: int = 8) -> list[int]:
    """The per-prefix, per-token Python loop that decoding.BeamSearch replaced (specrnn before 2026-12-07)."""
    beams: dict[tuple, tuple[float, float]] = {(): (0.0, -np.inf)}
    for lp in np.asarray(log_probs, dtype=np.float64):
        nxt: dict[tuple, list[float]] = {}

        def add(prefix: tuple, i: int, value: float) -> None:
            if value == -np.inf:
                return
            cell = nxt.setdefault(prefix, [-np.inf, -np.inf])
            cell[i] = np.logaddexp(cell[i], value)

        for prefix, (pb, pt) in beams.items():
            total = np.logaddexp(pb, pt)
            add(prefix, 0, total + lp[blank])
            for c in range(len(lp)):
                if c == blank:
                    continue
                if prefix and prefix[-1] == c:
                    add(prefix, 1, pt + lp[c])
                    add(prefix + (c,), 1, pb + lp[c])
                else:
                    add(prefix + (c,), 1, total + lp[c])
        ranked = sorted(nxt.items(), key=lambda kv: -np.logaddexp(*kv[1]))[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return list(max(beams.items(), key=lambda kv: np.logaddexp(*kv[1]))[0])


def compare(npz: str, out: str, repeats: int = 3) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from specrnn.decoding import BeamSearch, Grammar, NGramPrior, estimate_ngram

    d = np.load(npz)
    classes = [str(c) for c in d["classes"]]
    blank = len(classes)
    lps = np.split(d["lp"], np.cumsum(d["lengths"])[:-1])
    refs, train = json.loads(str(d["targets"])), json.loads(str(d["train"]))
    audio_s = float(d["audio_s"])

    def ours(beam, cons=()):
        def run(lp):
            s = BeamSearch(blank, beam, cons)
            s.update(lp)
            r = s.results()
            return r[0][0] if r else []
        return run

    decoders = {
        "greedy": lambda lp: [int(k) for i, k in enumerate(lp.argmax(-1)) if k != blank and (i == 0 or k != lp[i - 1].argmax())],
        "specrnn beam 8": ours(8),
        "specrnn beam 16": ours(16),
        "per-prefix loop beam 8 (before)": lambda lp: loop_beam(lp, blank, 8),
        "specrnn beam 16 + grammar <any>{2,7}": ours(16, [Grammar(["<any>{2,7}"], classes)]),
        "specrnn beam 16 + train bigram (weight 0.5)": ours(16, [NGramPrior(estimate_ngram(train, 2), classes, 0.5)]),
    }
    notes = []
    try:
        from pyctcdecode import build_ctcdecoder

        letters = [chr(ord("a") + i) for i in range(len(classes))]  # one character per token, no word boundaries
        dec = build_ctcdecoder(letters + [""])
        back = {c: i for i, c in enumerate(letters)}
        for width in (8, 16):
            decoders[f"pyctcdecode beam {width} (no LM)"] = (
                lambda lp, w=width: [back[c] for c in dec.decode(lp, beam_width=w)])
    except ImportError as e:
        notes.append(f"pyctcdecode not importable here ({e}); run this in a venv with it")
    rows = {}
    for name, fn in decoders.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            hyps = [fn(lp) for lp in lps]
            times.append(time.perf_counter() - t0)
        wer, ser = _errors(refs, hyps)
        rows[name] = {"wer": wer, "ser": ser, "per_audio_s": statistics.median(times) / audio_s}
        print(f"{name:48s} word error {100 * wer:5.2f}%  sequence error {100 * ser:5.2f}%  "
              f"{rows[name]['per_audio_s']:.5f} s per s of audio")
    res = {"clips": len(lps), "audio_s": audio_s, "repeats": repeats, "decoders": rows, "notes": notes,
           "numpy": np.__version__}
    Path(out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(sys.argv[2], sys.argv[3])
    else:
        compare(sys.argv[2], sys.argv[3])
