"""Recognition (CTC): connected digits built from FSDD (word and sequence error on the test takes, and on held-out
speakers), yesno word error per seed with the recipe's defaults, greedy vs prefix-beam decoding (accuracy and time
per second of audio), and the streaming real-time factor; the baseline (benchmarks/ctc_baseline.py: the seed-style
LSTM with CTC and greedy decoding in a plain loop) on the same splits. Needs ../shared/data (FSDD, yesno).
python -m benchmarks.recognition [--quick]
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .ctc_baseline import ctc_baseline
from .common import OUT, SHARED, figure, finish, load_str, quick_flag, start, table


def _decode_speed(run: Path, csv: Path) -> dict:
    """Greedy and beam decoding of the run's test split: word error and decode seconds per second of audio."""
    import numpy as np

    from specrnn.data.dataset import model_input_set
    from specrnn.data.manifest import load_manifest
    from specrnn.evaluation import sequence_metrics
    from specrnn.inference import Predictor
    from specrnn.decoding import BeamSearch, Grammar, NGramPrior, estimate_ngram
    from specrnn.decoding.greedy import best_path
    from specrnn.tasks.ctc import unpad

    p = Predictor.load(run, device="cpu")
    man = load_manifest(run / "split.csv")
    fs = model_input_set(man, p.cfg, p.classes, "test", "bench", "sequence")
    audio_s = sum(len(f) for f in fs.features) * p.cfg.features.hop_length / p.cfg.features.sample_rate
    lps = p.frame_log_probs(fs.features)
    blank = len(p.classes)
    bigram = NGramPrior(estimate_ngram([y.split() for y, s in zip(man.labels, man.splits) if s == "train"], 2), p.classes)

    def beam(width: int, constraints=()):
        def run(lp):
            search = BeamSearch(blank, width, constraints)
            search.update(lp)
            best = search.results()[:1]
            return best[0][0] if best else []
        return run

    out = {}
    for name, fn in (("greedy", lambda lp: best_path(lp, blank)[0]), ("beam 8", beam(8)), ("beam 16", beam(16)),
                     ("beam 16 + grammar '<any>{2,7}'", beam(16, [Grammar(["<any>{2,7}"], p.classes)])),
                     ("beam 16 + bigram of the train labels (weight 0.5)", beam(16, [bigram]))):
        times = []
        for _ in range(3):  # the median of 3 passes
            t0 = time.perf_counter()
            hyps = [fn(lp) for lp in lps]
            times.append(time.perf_counter() - t0)
        m = sequence_metrics(unpad(fs.targets), hyps, p.classes)
        out[name] = {"wer": m["token_error_rate"], "ser": m["sequence_error_rate"],
                     "per_audio_s": statistics.median(times) / audio_s}
    from specrnn.audio import load_audio

    rate = p.cfg.features.sample_rate
    wave = np.concatenate([load_audio(f, rate) for f in fs.paths[:8]])  # real speech, some 20 s of it
    chunk = int(0.1 * rate)
    for key, beam_width in (("stream_rtf", None), ("stream_rtf_beam", 16)):
        p.set_decoding(beam=beam_width)
        s = p.stream()
        t0 = time.perf_counter()
        for i in range(0, len(wave), chunk):
            s.push_audio(wave[i : i + chunk])
        s.finish()
        out[key] = (time.perf_counter() - t0) / (len(wave) / rate)
    return out


def _yesno(runs: Path, seed: int, quick: bool):
    """One yesno run with the recipe's defaults (no config, as `specrnn train DATA`) in its own process (one thread)."""
    import json

    from specrnn.results import TrainResult

    out = runs / f"recognition-yesno-{seed}"
    cmd = [sys.executable, "-m", "specrnn", "train", str(SHARED / "yesno" / "labels.csv"), "--out", str(out),
           "--overwrite", "--set", f"seed={seed}",
           "--set", "train.threads=1", *(["--max-epochs", "5"] if quick else [])]
    subprocess.run(cmd, check=True, capture_output=True)
    return TrainResult.of(json.loads((out / "metrics.json").read_text()), out)


def _rows(csv: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(path, label) rows of a manifest's train and test splits (its split column), for the baseline."""
    from specrnn.data.manifest import load_manifest

    m = load_manifest(csv)
    rows = list(zip(m.paths, m.labels, m.splits))
    return [(p, y) for p, y, s in rows if s == "train"], [(p, y) for p, y, s in rows if s == "test"]


def main(argv=None) -> dict:
    import specrnn
    from specrnn.data.connected import make_connected_digits
    from specrnn.recipe import CTC_EPOCHS

    quick = quick_flag(argv)
    res = start("recognition", quick)
    if not (SHARED / "fsdd").is_dir() or not (SHARED / "yesno").is_dir():
        res["notes"].append(f"skipped: no FSDD or yesno under {SHARED}")
        print(finish(res, quick))
        return res
    runs = OUT / ("quick" if quick else "") / "runs"
    with tempfile.TemporaryDirectory() as tmp:
        per_speaker = 40 if quick else 150
        csv = make_connected_digits(SHARED / "fsdd", Path(tmp) / "digits", per_speaker=per_speaker)
        t0 = time.perf_counter()
        sets = ["train.max_epochs=3"] if quick else []
        m = specrnn.train(csv, out=runs / "recognition-digits", overrides=sets, overwrite=True, log=lambda *a, **k: None)
        digits_s = time.perf_counter() - t0
        dec = _decode_speed(runs / "recognition-digits", csv)
        # the seed recipe's batches of 32, as many epochs as the recipe trains
        base = ctc_baseline(*_rows(csv), epochs=2 if quick else CTC_EPOCHS, batch_size=32)
        folds = 2 if quick else 3
        shutil.rmtree(runs / "recognition-digits-speakers", ignore_errors=True)  # its data is new each run (a temp dir)
        spk = specrnn.cv(csv, runs / "recognition-digits-speakers", overrides=sets, folds=folds, group_column="speaker",
                         log=lambda *a, **k: None)
    wer, ser = m.test.token_error_rate, m.test["sequence_error_rate"]
    base_name = "seed-style LSTM + CTC, greedy, plain loop, same split"
    res["figures"].append(figure(f"connected digits (FSDD, {per_speaker} utterances a speaker, test takes): word error",
                                 wer, "fraction", base_name, base["wer"], better="lower", target="<= 1%", met=wer <= 0.01,
                                 note=f"the recipe's defaults for token sequences; {m.test.n} test utterances; "
                                      f"{digits_s:.0f} s to train and evaluate (baseline {base['seconds']:.0f} s, "
                                      f"{2 if quick else CTC_EPOCHS} epochs like the recipe)"))
    res["figures"].append(figure("connected digits: sequence error", ser, "fraction", base_name, base["ser"],
                                 better="lower", target="<= 3%", met=ser <= 0.03))
    res["figures"].append(figure(f"connected digits, speakers held out ({folds}-fold cross-validation by speaker): word error",
                                 spk.token_error_rate_mean, "fraction", better="lower",
                                 note=f"the recipe's defaults; std {100 * spk.token_error_rate_std:.2f} points over folds"))
    res["tables"].append(table("Decoding the connected-digit test utterances (same model)",
                               ["decoder", "word error", "sequence error", "decode s per s of audio"],
                               [[k, f"{100 * v['wer']:.2f}%", f"{100 * v['ser']:.2f}%", f"{v['per_audio_s']:.5f}"]
                                for k, v in dec.items() if not k.startswith("stream_rtf")]))
    res["figures"].append(figure("connected digits: streaming real-time factor (100 ms chunks, PyTorch)",
                                 dec["stream_rtf"], "x", better="lower"))
    res["figures"].append(figure("connected digits: streaming real-time factor with beam 16 (100 ms chunks, PyTorch)",
                                 dec["stream_rtf_beam"], "x", better="lower"))
    seeds = [0, 1] if quick else list(range(10))
    rows, wers = [], []
    with ThreadPoolExecutor(2) as pool:  # two runs at a time, one thread each (2 cores)
        for seed, r in zip(seeds, pool.map(lambda s: _yesno(runs, s, quick), seeds)):
            wers.append(r.test.token_error_rate)
            rows.append([seed, f"{100 * r.test.token_error_rate:.2f}%", f"{100 * r.val.token_error_rate:.2f}%",
                         f"{r.train_seconds:.0f}"])
    failed = sum(w > 0.1 for w in wers)
    yes_base = ctc_baseline(*_rows(SHARED / "yesno" / "labels.csv"), epochs=5 if quick else 60, batch_size=4)
    res["tables"].append(table("yesno, the recipe's defaults (no config), one run per seed (test: the last 30 files)",
                               ["seed", "test word error", "val word error", "train s"], rows))
    res["figures"].append(figure(f"yesno: seeds reaching 0% test word error (of {len(seeds)})",
                                 sum(w == 0 for w in wers), "seeds", target=f"all {len(seeds)}",
                                 met=all(w == 0 for w in wers),
                                 note=f"median word error {100 * statistics.median(wers):.2f}%; {failed} seed(s) above 10%"))
    res["figures"].append(figure("yesno: median test word error over the seeds", statistics.median(wers), "fraction",
                                 "seed-style LSTM + CTC, 60 epochs, batches of 4, seed 0", yes_base["wer"], better="lower",
                                 note=f"baseline {yes_base['seconds']:.0f} s to train"))
    res["notes"].append(f"Load: {load_str()}.")
    print(finish(res, quick))
    return res


if __name__ == "__main__":
    main()
