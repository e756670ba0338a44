"""What the top-dB restarts of audio streaming cost: a 30 s tone streamed in 100 ms chunks through the `gru`
preset (random weights, one thread), steady and rising 78 dB over the clip (the worst case: the floor keeps
rising), with features.top_db null (never restarts) and 80 (the default). Median of 3; the final logits are
compared with the offline pass.

python -m experiments.stream_restarts   ->  benchmarks/out/stream_restarts.json
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.common import machine, write_json


def main(argv=None) -> int:
    import torch

    from specrnn.config import load_config
    from specrnn.features import FeatureExtractor
    from specrnn.models import build_model
    from specrnn.inference.streaming import RESTART_DB, StreamingClassifier

    torch.set_num_threads(1)
    res: dict = {"suite": "stream_restarts", "machine": machine(), "restart_db": RESTART_DB, "cases": {}}
    for top_db in (None, 80.0):
        cfg = load_config("gru", [] if top_db else ["features.top_db=null"])
        ex = FeatureExtractor(cfg.features)
        torch.manual_seed(0)
        model = build_model(cfg.model, cfg.features.n_features, 10).eval()
        sr = cfg.features.sample_rate
        t = np.arange(30 * sr) / sr
        for name, loudness in (("steady", np.full(len(t), 0.3)), ("rising", np.geomspace(1e-4, 0.9, len(t)))):
            wave = (np.sin(2 * np.pi * 440 * t) * loudness).astype(np.float32)
            times, step = [], int(0.1 * sr)
            for _ in range(3):
                s, restarts = StreamingClassifier(model, ex), 0
                t0 = time.perf_counter()
                for i in range(0, len(wave), step):
                    s.push_audio(wave[i : i + step])
                    restarts += s.audio.restart
                s.finish()
                times.append(time.perf_counter() - t0)
            with torch.no_grad():
                feats, n = ex(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
                diff = float((s.logits() - model(feats, n)).abs().max())
            key = f"{name}, top_db={top_db}"
            res["cases"][key] = {"median_seconds": round(statistics.median(times), 3), "audio_seconds": 30,
                                 "restarts_while_streaming": restarts, "max_abs_logit_diff_vs_offline": diff}
            print(f"{key}: {statistics.median(times):.2f} s for 30 s of audio, {restarts} restarts, "
                  f"final logits within {diff:.1e} of offline", flush=True)
    print(f"wrote {write_json('stream_restarts', res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
