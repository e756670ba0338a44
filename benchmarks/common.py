"""Shared helpers for the benchmark scripts: data locations, machine info, JSON output, timing."""
from __future__ import annotations

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
    out = OUT / f"fsdd_{label}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    man.to_csv(out)
    return out


def write_json(name: str, obj) -> Path:
    from specrnn.files import write_json as _w

    path = OUT / f"{name}.json"
    _w(path, obj)
    return path


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def mean_std(xs) -> tuple[float, float]:
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0) if xs else (float("nan"), float("nan"))


# ---------------------------------------------------------------- added for `python -m benchmarks`
QUICK_OUT = OUT / "quick"
ESC10 = SHARED / "esc10"


def out_dir(quick: bool) -> Path:
    """Where a suite writes: full runs to benchmarks/out, quick runs to benchmarks/out/quick (never mixed)."""
    path = QUICK_OUT if quick else OUT
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_now() -> dict:
    """Load averages and other processes' CPU use: the noise every speed figure carries on a shared machine."""
    one, five, fifteen = os.getloadavg()
    return {"loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2), "loadavg_15m": round(fifteen, 2),
            "time": time.strftime("%H:%M:%S")}


def load_str() -> str:
    """The load now, for a note: '1-minute load average 2.43 (5-minute 2.72) at 18:59:01'."""
    d = load_now()
    return f"1-minute load average {d['loadavg_1m']} (5-minute {d['loadavg_5m']}) at {d['time']}"


def quick_flag(argv=None) -> bool:
    """Parse a suite's only option, --quick (fewer repeats, epochs and files)."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a subset: fewer repeats, epochs and files")
    return ap.parse_args(argv).quick


def start(suite: str, quick: bool) -> dict:
    """The JSON skeleton every suite fills: machine, mode, load at the start."""
    return {"suite": suite, "quick": quick, "machine": machine(), "load_start": load_now(), "figures": [], "tables": [],
            "notes": []}


def finish(res: dict, quick: bool) -> Path:
    """Record the load at the end and write out/<suite>.json (or out/quick/<suite>.json)."""
    from specrnn.files import write_json as _w

    res["load_end"] = load_now()
    path = out_dir(quick) / f"{res['suite']}.json"
    _w(path, res)
    return path


def figure(name: str, value: float, unit: str, baseline: str | None = None, baseline_value: float | None = None,
           better: str = "higher", target: str | None = None, met: bool | None = None, note: str = "", **extra) -> dict:
    """One measured figure with its baseline (same run, same machine) and the ratio in the 'better' direction."""
    ratio = None
    if baseline_value not in (None, 0) and value not in (None, 0):
        ratio = value / baseline_value if better == "higher" else baseline_value / value
    return {"name": name, "value": value, "unit": unit, "baseline": baseline, "baseline_value": baseline_value,
            "ratio": ratio, "better": better, "target": target, "met": met, "note": note, **extra}


def table(title: str, header: list[str], rows: list[list], note: str = "") -> dict:
    return {"title": title, "header": header, "rows": rows, "note": note}


def timed(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `fn()` for each of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def threads(n: int) -> None:
    """Set torch's intra-op threads (every figure records the count it ran with)."""
    import torch

    torch.set_num_threads(n)


def fsdd_groups_manifest() -> Path:
    """FSDD for leave-one-speaker-out: group = speaker, no split column (cv assigns test = the left-out speaker)."""
    from specrnn.data.manifest import from_pattern

    man = from_pattern(SHARED / "fsdd" / "recordings", "{label}_{group}_{take}.wav")
    out = OUT / "fsdd_loso.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    man.to_csv(out)
    return out


def one_second_clips(n: int, folder: Path | None = None) -> list[Path]:
    """n real one-second clips (FSDD recordings joined end to end, 8 kHz WAV) in a temp folder outside the repo."""
    import tempfile

    import numpy as np
    import soundfile as sf

    folder = Path(folder or Path(tempfile.gettempdir()) / "specrnn-bench-clips")
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted((SHARED / "fsdd" / "recordings").glob("*.wav"))
    paths, k = [], 0
    for i in range(n):
        path = folder / f"clip{i:04d}.wav"
        paths.append(path)
        if path.exists():
            continue
        wave = []
        while sum(len(w) for w in wave) < 8000:
            wave.append(sf.read(str(files[k % len(files)]), dtype="float32")[0])
            k += 7
        sf.write(str(path), np.concatenate(wave)[:8000], 8000)
    return paths


def random_run(preset: str | None, folder: Path, n_features: int = 64, classes: int = 10) -> Path:
    """A run folder holding an untrained model of a preset (for timing only: speed does not depend on weight values)."""
    import torch

    from specrnn.config import load_config
    from specrnn.models import build_model
    from specrnn.files import save_model

    cfg = load_config(preset)
    torch.manual_seed(0)
    model = build_model(cfg.model, n_features, classes)
    model.normalizer.mean.fill_(-45.0)  # about FSDD's log-mel statistics
    model.normalizer.std.fill_(15.0)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder / "model.pt", model.state_dict(),
               {"config": cfg.to_dict(), "classes": [str(i) for i in range(classes)], "epoch": 0})
    return folder


def fsdd_prepared(overrides: list[str] | None = None, cache_dir: Path | None = None):
    """(Prepared, Config) for FSDD digits, standard split, default config: specrnn's own splits and cached features."""
    from specrnn.config import load_config
    from specrnn.data.manifest import load_manifest
    from specrnn.training.prepare import prepare_data

    cfg = load_config(None, [f"data.cache_dir={cache_dir or OUT / 'cache'}", *(overrides or [])])
    prep = prepare_data(load_manifest(fsdd_manifest("digit")), cfg, None, log=lambda *a: None)
    return prep, cfg


def specrnn_batches(prep, cfg, split: str = "train", bucket: bool = True, epoch: int = 0):
    """The batches specrnn's training loader yields for one epoch: (features, lengths, targets) tensors."""
    from specrnn.data.batching import BucketBatchSampler, pad_batch

    import torch

    fs = prep.sets[split]
    sampler = BucketBatchSampler(fs.lengths, cfg.train.batch_size, shuffle=True, bucket=bucket, seed=cfg.seed)
    sampler.set_epoch(epoch)
    out = []
    for idx in sampler:
        x, lengths = pad_batch([torch.from_numpy(fs.features[i]) for i in idx])
        out.append((x, lengths, torch.as_tensor(fs.targets[idx])))
    return out


def encoder_seconds(model, batches, repeats: int, impl: str | None = None) -> float:
    """Median seconds of encoder forward+backward over `batches` (normalised, stacked inputs prepared beforehand),
    with the model's RNN implementation or `impl` (padded | packed) for the measurement."""
    import torch

    from specrnn.models.frontends import stack_frames

    enc = model.encoder
    old = enc.impl
    enc.impl = impl or old
    with torch.no_grad():
        inputs = [stack_frames(model.normalizer(x, L), L, model.cfg.stack) for x, L, _ in batches]

    def run():
        for x, L in inputs:
            enc(x, L).sum().backward()

    try:
        return statistics.median(timed(run, repeats))
    finally:
        enc.impl = old


def profiled(fn, top: int) -> tuple[list[list], list]:
    """Run fn() under torch.profiler: the `top` ops by self CPU time as table rows (op, calls, ms, share), and
    every op's averages, heaviest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ev) or 1
    rows = [[e.key, e.count, f"{e.self_cpu_time_total / 1e3:.0f}", f"{100 * e.self_cpu_time_total / total:.1f}%"] for e in ev[:top]]
    return rows, ev
