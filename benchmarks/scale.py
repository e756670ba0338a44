"""Scale: how long a manifest of 1,000,000 rows takes to load, validate and split (group-aware, stratified), on a
generated CSV (no audio needed: loading checks the table, not the files), median of 3; and the peak memory of
`specrnn train` on generated 1-s clips as the data grows, training a fixed number of steps (train.steps_per_epoch)
with every validation and test clip scored, cold (features extracted into an empty store) and warm (read back).
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
    res["notes"].append("Not measured: 1,000,000 clips of audio (32 GB of WAV here); GPU extraction (no GPU lent to "
                        "this task). Extraction speed against librosa is the features_speed suite.")
    res["notes"].append(f"Load: {load_str()}.")
    print(finish(res, quick))
    return res


if __name__ == "__main__":
    main()
