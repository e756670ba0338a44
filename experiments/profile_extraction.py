"""Where extraction into the feature store spends its time on 1-s 16 kHz clips (the scale suite's extraction case):
each stage timed on its own over the same files, one thread, then cProfile of `compute_features` itself.
python -m experiments.profile_extraction [N]"""
from __future__ import annotations

import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(n: int = 2000) -> None:
    import numpy as np
    import soundfile as sf
    import torch

    from benchmarks.scale import write_clips
    from specrnn.audio import load_audio
    from specrnn.config import FeatureConfig
    from specrnn.data.dataset import compute_features
    from specrnn.data.store import file_key
    from specrnn.features import FeatureExtractor

    torch.set_num_threads(1)
    cfg = FeatureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        man = write_clips(Path(tmp) / "clips", n)
        paths = [line.split(",")[0] for line in man.read_text().splitlines()[1:]]
        waves = [load_audio(p, cfg.sample_rate) for p in paths]
        ext = FeatureExtractor(cfg)
        stages = {
            "stat + sha1 key": lambda: [file_key(p) for p in paths],
            "sf.read only": lambda: [sf.read(p, dtype="float32") for p in paths],
            "load_audio (checks)": lambda: [load_audio(p, cfg.sample_rate) for p in paths],
            "features (batched, 32)": lambda: ext.extract(waves),
            "features (batched, 256)": lambda: ext.extract(waves, batch_size=256),
            "copy into float32 shard": lambda: np.concatenate([np.ascontiguousarray(w[:100]) for w in waves]),
        }
        compute_features(paths[:50], cfg, use_cache=False, desc="")
        for name, fn in stages.items():
            t = _median_time(fn)
            print(f"{name:28s} {1e6 * t / n:8.1f} us/clip")
        counter = iter(range(100))
        t = _median_time(lambda: compute_features(paths, cfg, cache_dir=f"{tmp}/store{next(counter)}", desc=""))
        print(f"{'compute_features (store)':28s} {1e6 * t / n:8.1f} us/clip")
        prof = cProfile.Profile()
        prof.enable()
        compute_features(paths, cfg, cache_dir=f"{tmp}/store-prof", desc="")
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
