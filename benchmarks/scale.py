"""Scale: how long a manifest of 1,000,000 rows takes to load, validate and split (group-aware, stratified), on a
generated CSV (no audio needed: loading checks the table, not the files), median of 3; and the peak memory of
`specrnn train` on generated 1-s clips as the data grows, training a fixed number of steps (train.steps_per_epoch)
with every validation and test clip scored, cold (features extracted into an empty store) and warm (read back);
feature extraction into the store on generated 1-s 16 kHz clips against a librosa per-file loop (and the share of the
GEMM rate the log-mel reaches); end to end on FSDD, `specrnn train` + `specrnn evaluate` from process start against the
seed-style plain loop (benchmarks/defaults.py's baseline) run the same way.
python -m benchmarks.scale [--quick]
"""
from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .common import figure, finish, load_str, quick_flag, start, table


def write_manifest(path: Path, rows: int, groups: int = 5000, classes: int = 10) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        for i in range(rows):
            w.writerow([f"clips/{i // 1000:04d}/c{i:07d}.wav", f"class{i % classes}", f"spk{i % groups}"])
    return path


def write_clips(root: Path, n: int, classes: int = 10) -> Path:
    """n 1-s 16 kHz 16-bit clips (a tone per class, in noise) and their manifest."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    tones = [np.sin(2 * np.pi * (200 + 150 * k) * t) for k in range(classes)]
    rows = []
    for i in range(n):
        path = root / f"{i // 1000:04d}" / f"c{i:07d}.wav"
        if i % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        k = i % classes
        sf.write(path, 0.3 * tones[k] + 0.05 * rng.standard_normal(16000), 16000, subtype="PCM_16")
        rows.append((str(path), f"class{k}", f"spk{i % 500}"))
    csv_path = root / "m.csv"
    with open(csv_path, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "group"), *rows])
    return csv_path


def _peak_memory(cmd: list[str]) -> dict:
    """Run a command; its peak resident memory (VmHWM: every resident page, mapped feature-store pages included)
    and peak anonymous memory (RssAnon, sampled every 20 ms: the heap, what the store keeps off), in MB."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="2"))
    peak = {"anon": 0, "hwm": 0}

    def sample():
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                break
            for line in status.splitlines():
                if line.startswith("RssAnon:"):
                    peak["anon"] = max(peak["anon"], int(line.split()[1]))
                elif line.startswith("VmHWM:"):
                    peak["hwm"] = max(peak["hwm"], int(line.split()[1]))
            time.sleep(0.02)

    t0 = time.perf_counter()
    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return {"anon_mb": peak["anon"] / 1024, "hwm_mb": peak["hwm"] / 1024, "seconds": time.perf_counter() - t0}


def memory_rows(sizes: list[int], steps: int, log=print) -> list[dict]:
    """Peak memory of `specrnn train` (a small GRU, `steps` training steps, one epoch) per data size, cold and warm."""
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory(dir=os.environ.get("SPECRNN_BENCH_TMP")) as tmp:
            t0 = time.perf_counter()
            csv_path = write_clips(Path(tmp) / "clips", n)
            log(f"scale: {n:,} clips written in {time.perf_counter() - t0:.0f} s")
            cmd = [sys.executable, "-m", "specrnn", "train", str(csv_path), "--overwrite",
                   "--set", f"train.steps_per_epoch={steps}", "--set", "train.max_epochs=1", "--set", "model.hidden=64",
                   "--set", f"data.cache_dir={Path(tmp) / 'cache'}", "--set", "train.threads=2"]
            row = {"clips": n}
            for phase in ("cold", "warm"):
                row[phase] = _peak_memory([*cmd, "--out", str(Path(tmp) / f"run-{phase}")])
                log(f"scale: {n:,} clips, {phase}: {row[phase]}")
            store = Path(tmp) / "cache" / "store"
            row["store_mb"] = sum(f.stat().st_size for f in store.rglob("*.f32")) / 2**20
            row["shards"] = len(list(store.rglob("*.f32")))
            out.append(row)
    return out


def _logmel_flops(cfg, frames: int) -> float:
    """Floating-point operations of one clip's log-mel: real FFT (2.5 N log2 N), window, power, mel product, log."""
    import math

    bins = cfg.n_fft // 2 + 1
    return frames * (2.5 * cfg.n_fft * math.log2(cfg.n_fft) + cfg.n_fft + 3 * bins + 2 * bins * cfg.n_mels + cfg.n_mels)


def extraction(n: int, repeats: int, log=print) -> dict:
    """Clips/s of specrnn's extraction into an empty feature store (compute_features: decode, resample, batched
    log-mel, shards written) in one process (its default on fewer than 4 cores) and in 2 worker processes, against
    librosa.load + melspectrogram per file; interleaved, median of `repeats`. One torch/BLAS thread per process."""
    from specrnn.config import FeatureConfig
    from specrnn.data.dataset import compute_features

    from .baseline import librosa_logmel
    from .common import threads
    from .efficiency import gemm_gflops

    threads(1)
    cfg = FeatureConfig()
    times: dict[str, list[float]] = {"specrnn": [], "specrnn_2proc": [], "librosa": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("SPECRNN_BENCH_TMP")) as tmp:
        paths = [row[0] for row in csv.reader(write_clips(Path(tmp) / "clips", n).read_text().splitlines()[1:])]
        librosa_logmel(paths[0]), compute_features(paths[:50], cfg, use_cache=False, desc="")  # warm-up: imports
        for r in range(repeats):
            for name, workers in (("specrnn", None), ("specrnn_2proc", 2)):
                t0 = time.perf_counter()
                feats, errors = compute_features(paths, cfg, cache_dir=str(Path(tmp) / f"store-{name}-{r}"), desc="",
                                                 workers=workers)
                times[name].append(time.perf_counter() - t0)
                assert not errors and all(f is not None for f in feats)
            t0 = time.perf_counter()
            for p in paths:
                librosa_logmel(p)
            times["librosa"].append(time.perf_counter() - t0)
            log(f"scale: extraction pass {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
        frames = len(feats[0])
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    gflops = rate["specrnn"] * _logmel_flops(cfg, frames) / 1e9
    return {"clips": n, "rate": rate, "gflops": gflops, "gemm_gflops": gemm_gflops(1), "times": times}


def _timed_cmds(cmds: list[list[str]], timeout: float) -> tuple[float, str]:
    """Run commands one after another: wall seconds from the first start to the last exit, the last one's stdout."""
    t0 = time.perf_counter()
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parent.parent)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout


_BASELINE = """
import json, sys
from benchmarks.defaults import baseline, _rows
split = lambda man, i: man.splits[i] if man.splits[i] == 'test' else 'train'
print(json.dumps(baseline(*_rows(sys.argv[1], split), int(sys.argv[2]))), file=open(sys.argv[3], 'w'))
"""


def end_to_end(epochs: int, quick: bool) -> dict:
    """FSDD digits, standard split: `specrnn train` (defaults, empty feature store) then `specrnn evaluate`, as two
    processes, against the seed-style plain loop (librosa features, LSTM read at the last real frame, `epochs` epochs) in
    one process; wall seconds from process start, start-up included."""
    import json

    from .common import fsdd_manifest

    man = fsdd_manifest("digit")
    with tempfile.TemporaryDirectory(dir=os.environ.get("SPECRNN_BENCH_TMP")) as tmp:
        run = Path(tmp) / "run"
        sets = ["--set", f"data.cache_dir={Path(tmp) / 'cache'}"] + (["--set", "train.max_epochs=2"] if quick else [])
        ours, report = _timed_cmds([[sys.executable, "-m", "specrnn", "train", str(man), "--out", str(run), *sets],
                            [sys.executable, "-m", "specrnn", "evaluate", str(run), "--json"]], timeout=1800)
        acc = json.loads(report)["accuracy"]
        out = Path(tmp) / "baseline.json"
        theirs, _ = _timed_cmds([[sys.executable, "-c", _BASELINE, str(man), str(epochs), str(out)]], timeout=3600)
        base = json.loads(out.read_text())
    return {"seconds": ours, "accuracy": acc, "baseline_seconds": theirs, "baseline_accuracy": base["accuracy"],
            "epochs": epochs}


def main(argv=None) -> dict:
    from specrnn.data.manifest import load_manifest
    from specrnn.data.splits import assign_splits

    quick = quick_flag(argv)
    res = start("scale", quick)
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = write_manifest(Path(tmp) / f"m{n}.csv", n)
            loads, splits = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                man = load_manifest(path)
                t1 = time.perf_counter()
                assign_splits(man, 0.1, 0.1, 0)
                loads.append(t1 - t0)
                splits.append(time.perf_counter() - t1)
            rows.append([f"{n:,}", f"{statistics.median(loads):.2f}", f"{statistics.median(splits):.2f}"])
            if n == 1_000_000:
                res["figures"].append(figure("manifest of 1,000,000 rows: load + validate", statistics.median(loads), "s",
                                             better="lower", target="a few seconds", met=statistics.median(loads) < 5))
                res["figures"].append(figure("manifest of 1,000,000 rows: group-aware stratified split (5,000 groups)",
                                             statistics.median(splits), "s", better="lower", target="a few seconds",
                                             met=statistics.median(splits) < 5,
                                             note="label and group strings coded once, groups placed greedily"))
    res["tables"].append(table(f"Manifest load and split, seconds (median of {repeats})", ["rows", "load", "split"], rows))
    mem_sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    mem = memory_rows(mem_sizes, steps=20 if quick else 50)
    res["tables"].append(table(
        "Peak memory of `specrnn train` on 1-s clips (MB; 50 training steps, every val/test clip scored)",
        ["clips", "feature store", "cold: anon", "cold: all resident", "cold: s", "warm: anon", "warm: all resident", "warm: s"],
        [[f"{r['clips']:,}", f"{r['store_mb']:.0f} ({r['shards']} shards)", f"{r['cold']['anon_mb']:.0f}",
          f"{r['cold']['hwm_mb']:.0f}", f"{r['cold']['seconds']:.0f}", f"{r['warm']['anon_mb']:.0f}",
          f"{r['warm']['hwm_mb']:.0f}", f"{r['warm']['seconds']:.0f}"] for r in mem],
        note="anon: peak anonymous memory (heap), sampled every 20 ms; all resident: VmHWM, which also counts the "
             "store's mapped pages while they are resident (the kernel can drop those under memory pressure)"))
    small, big = mem[0], mem[-1]
    growth = big["warm"]["anon_mb"] / small["warm"]["anon_mb"]
    res["figures"].append(figure(f"peak anonymous memory of train, {big['clips']:,} vs {small['clips']:,} clips (warm store)",
                                 growth, "x", better="lower", target="<= 1.2x as data grows 100x", met=growth <= 1.2,
                                 note=f"{small['warm']['anon_mb']:.0f} MB -> {big['warm']['anon_mb']:.0f} MB; "
                                      f"{big['clips'] // small['clips']}x the data"))
    ex = extraction(300 if quick else 3000, 1 if quick else 3)
    res["figures"].append(figure(
        f"feature extraction into the store, {ex['clips']:,} generated 1-s 16 kHz clips: clips/s",
        ex["rate"]["specrnn"], "clips/s", "librosa.load + melspectrogram per file", ex["rate"]["librosa"],
        target=">= 20x", met=ex["rate"]["specrnn"] / ex["rate"]["librosa"] >= 20,
        note=f"specrnn in one process (its default under 4 cores); in 2 worker processes "
             f"{ex['rate']['specrnn_2proc']:,.0f} clips/s; 1 torch/BLAS thread per process; median of "
             f"{len(ex['times']['librosa'])} interleaved passes"))
    res["figures"].append(figure("log-mel extraction: achieved GFLOP/s / float32 GEMM rate (1 thread)",
                                 ex["gflops"] / ex["gemm_gflops"], "fraction",
                                 note=f"{ex['gflops']:.1f} GFLOP/s counted (FFT as 2.5 N log2 N, power, mel product) "
                                      f"over the whole pass (decode and store writes included); GEMM "
                                      f"{ex['gemm_gflops']:.0f} GFLOP/s"))
    e2e = end_to_end(2 if quick else 20, quick)
    res["figures"].append(figure(
        "end to end on FSDD digits: specrnn train + evaluate (defaults, empty store), s from process start",
        e2e["seconds"], "s", f"seed-style LSTM at the last real frame, plain loop, {e2e['epochs']} epochs, librosa features",
        e2e["baseline_seconds"], better="lower", target=">= 8x faster", met=e2e["baseline_seconds"] / e2e["seconds"] >= 8,
        note=f"test accuracy {100 * e2e['accuracy']:.2f}% against the baseline's {100 * e2e['baseline_accuracy']:.2f}%; "
             "standard split (takes 0-4 test); the baseline on torch's default threads"))
    res["notes"].append("Not measured: 1,000,000 clips of audio (32 GB of WAV here); GPU extraction (no GPU lent to "
                        "this task). Extraction on real FSDD / ESC-10 files is the features_speed suite.")
    res["notes"].append(f"Load: {load_str()}.")
    print(finish(res, quick))
    return res


if __name__ == "__main__":
    main()
