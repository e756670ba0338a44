"""Shared helpers for the benchmark scripts: data locations, machine info, JSON output, timing."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPECRNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "out"


def machine() -> dict:
    import torch

    return {"cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def fsdd_manifest(label: str = "digit") -> Path:
    """FSDD standard split (takes 0-4 test) as a CSV: label = digit or speaker."""
    from specrnn.data.manifest import from_pattern

    pattern = "{label}_{speaker}_{take}.wav" if label == "digit" else "{digit}_{label}_{take}.wav"
    man = from_pattern(SHARED / "fsdd" / "recordings", pattern, ["take<5=test"])
    man.extra.pop("_unmatched", None)
    out = OUT / f"fsdd_{label}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    man.to_csv(out)
    return out


def write_json(name: str, obj) -> Path:
    from specrnn.run import write_json as _w

    path = OUT / f"{name}.json"
    _w(path, obj)
    return path


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def mean_std(xs) -> tuple[float, float]:
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0) if xs else (float("nan"), float("nan"))
