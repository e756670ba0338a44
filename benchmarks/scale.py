"""Scale: how long a manifest of 1,000,000 rows takes to load, validate and split (group-aware, stratified), on a
generated CSV (no audio needed: loading checks the table, not the files). Median of 3.
python -m benchmarks.scale [--quick]
"""
from __future__ import annotations

import csv
import statistics
import tempfile
import time
from pathlib import Path

from .common import figure, finish, load_str, quick_flag, start, table


def write_manifest(path: Path, rows: int, groups: int = 5000, classes: int = 10) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        for i in range(rows):
            w.writerow([f"clips/{i // 1000:04d}/c{i:07d}.wav", f"class{i % classes}", f"spk{i % groups}"])
    return path


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
                                             note="scikit-learn's StratifiedGroupKFold: most of the time"))
    res["tables"].append(table(f"Manifest load and split, seconds (median of {repeats})", ["rows", "load", "split"], rows))
    res["notes"].append("Not built yet (issue 28): the sharded feature store, bounded-memory training, parallel and "
                        "GPU extraction, DDP shard reading; so no peak-RSS or extraction-throughput figures.")
    res["notes"].append(f"Load: {load_str()}.")
    print(finish(res, quick))
    return res


if __name__ == "__main__":
    main()
