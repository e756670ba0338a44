"""Feature extraction speed: specrnn's decode + batched torch log-mel vs a per-file librosa loop, files/s.

Decoding and feature computation are timed separately (decode alone, features of already-decoded waves), so the
table shows where the time goes. python -m benchmarks.features_speed [--quick]
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from .common import ESC10, SHARED, figure, finish, load_str, profiled, quick_flag, start, table, threads

TARGET = 10.0


def _datasets(quick: bool) -> dict[str, list[str]]:
    fsdd = sorted(str(p) for p in (SHARED / "fsdd" / "recordings").glob("*.wav"))
    esc = sorted(str(p) for p in ESC10.rglob("*.ogg"))
    if quick:
        fsdd, esc = fsdd[::5], esc[::4]  # 600 and 100 files
    return {"FSDD (8 kHz WAV, mean 0.44 s)": fsdd, "ESC-10 (44.1 kHz OGG, 5 s)": esc}


def _specrnn(paths: list[str], decode_threads: int) -> dict:
    import torch

    from specrnn.audio import load_many
    from specrnn.config import FeatureConfig
    from specrnn.features import FeatureExtractor

    cfg = FeatureConfig()
    ex = FeatureExtractor(cfg)
    t0 = time.perf_counter()
    waves = load_many(paths, cfg.sample_rate, cfg.max_seconds, cfg.crop, threads=decode_threads)
    t1 = time.perf_counter()
    with torch.no_grad():
        feats = ex.extract(waves)
    t2 = time.perf_counter()
    return {"decode": t1 - t0, "features": t2 - t1, "total": t2 - t0, "feats": feats, "waves": waves}


def _librosa(paths: list[str]) -> dict:
    """The common loop: librosa.load then librosa.feature.melspectrogram per file, timed part by part."""
    import librosa

    from .baseline import SR, logmel_of

    dec = feat = 0.0
    feats = []
    for p in paths:
        t0 = time.perf_counter()
        y, _ = librosa.load(p, sr=SR)
        t1 = time.perf_counter()
        feats.append(logmel_of(y))
        feat += time.perf_counter() - t1
        dec += t1 - t0
    return {"decode": dec, "features": feat, "total": dec + feat, "feats": feats}


def profile_extract(waves: list, top: int = 8) -> list[list]:
    """torch.profiler of FeatureExtractor.extract: the ops with the most self CPU time."""
    from specrnn.config import FeatureConfig
    from specrnn.features import FeatureExtractor

    ex = FeatureExtractor(FeatureConfig())
    return profiled(lambda: ex.extract(waves), top)[0]


def main(argv=None) -> dict:
    quick = quick_flag(argv)
    repeats = 2 if quick else 3
    res = start("features_speed", quick)
    threads(1)
    rows = []
    for name, paths in _datasets(quick).items():
        _librosa(paths[:5]), _specrnn(paths[:40], 2)  # warm-up: imports, librosa's first-call set-up, allocator
        runs: dict[str, list[dict]] = {"specrnn": [], "specrnn_1dec": [], "librosa": []}
        for _ in range(repeats):  # interleaved, so load changes hit both sides alike
            runs["specrnn"].append(_specrnn(paths, 2))
            runs["specrnn_1dec"].append(_specrnn(paths, 1))
            runs["librosa"].append(_librosa(paths))
        med = {k: {part: statistics.median(r[part] for r in v) for part in ("decode", "features", "total")} for k, v in runs.items()}
        n = len(paths)
        diff = max(float(np.abs(a_ - b_).max()) for a_, b_ in zip(runs["specrnn"][0]["feats"], runs["librosa"][0]["feats"]))
        fps = {k: {part: n / sec for part, sec in v.items()} for k, v in med.items()}
        total_ratio = fps["specrnn"]["total"] / fps["librosa"]["total"]
        res["figures"].append(figure(
            f"{name}: decode + log-mel, files/s", fps["specrnn"]["total"], "files/s", "librosa per-file loop",
            fps["librosa"]["total"], target=f">= {TARGET:.0f}x", met=total_ratio >= TARGET, files=n,
            note="specrnn decodes with its default (2 threads when files average over 64 KB, else 1), features on 1 torch thread; librosa loop single-threaded"))
        res["figures"].append(figure(
            f"{name}: log-mel only (decoded waves), files/s", fps["specrnn"]["features"], "files/s",
            "librosa.feature.melspectrogram per file", fps["librosa"]["features"], target=f">= {TARGET:.0f}x",
            met=fps["specrnn"]["features"] / fps["librosa"]["features"] >= TARGET, files=n))
        res["figures"].append(figure(
            f"{name}: decode + resample only, files/s", fps["specrnn"]["decode"], "files/s", "librosa.load per file",
            fps["librosa"]["decode"], files=n, note="specrnn: soundfile + soxr, default threading"))
        for k, label in (("specrnn", "specrnn (default decode threads)"), ("specrnn_1dec", "specrnn (decode forced to 1 thread)"),
                         ("librosa", "librosa per-file loop")):
            m = med[k]
            rows.append([name, label, n, f"{m['decode']:.2f}", f"{m['features']:.2f}", f"{m['total']:.2f}",
                         f"{n / m['total']:.0f}", f"{100 * m['decode'] / m['total']:.0f}%"])
        res["notes"].append(f"{name}: max |specrnn - librosa| log-mel difference {diff:.2e} dB (same features).")
        res["tables"].append(table(f"{name}: torch.profiler of specrnn's log-mel (FeatureExtractor.extract, 1 thread)",
                                   ["op", "calls", "self ms", "share"], profile_extract(runs["specrnn"][0]["waves"]),
                                   note="_fft_r2c: the STFT; pow + add: the power spectrum re^2 + im^2; mm: the mel filterbank"))
    res["tables"].insert(0, table("Where the time goes (median seconds per pass over the files)",
                               ["data", "path", "files", "decode s", "log-mel s", "total s", "files/s", "decode share"], rows))
    res["notes"].append(f"Medians of {repeats} interleaved passes; torch threads 1. Load during the run: {load_str()}.")
    print(finish(res, quick))
    return res


if __name__ == "__main__":
    main()
