"""Refactor parity: record what small fixed-seed runs produce, then compare two recordings within a tolerance.

    python -m benchmarks.parity record OUT.json [--work DIR]    # trains each preset + CTC on CPU, records outputs
    python -m benchmarks.parity compare BEFORE.json AFTER.json  # max difference per run and output; exit 1 over 1e-6

What is recorded, per run: metrics.json (times and the hardware line left out), probabilities (or CTC decodings) of
a fixed file set, streaming outputs after every chunk (PyTorch; unidirectional models), and ONNX outputs (offline;
streaming where the model streams). Only the public API is used, so the same script runs on the code before and
after a refactor. The demo data (12 clips a class) and the yesno corpus (CTC; skipped when ../shared is absent).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
YESNO = Path(os.environ.get("SPECRNN_SHARED_DATA", ROOT.parent / "shared" / "data")) / "yesno" / "labels.csv"
PRESETS = ["gru", "lstm", "bilstm", "att-rnn", "crnn", "seed-lstm", "seed-bilstm"]
FAST = {"train.max_epochs": 2, "model.hidden": 32, "train.threads": 1}
RUNS = {name: (name, {}) for name in PRESETS}
RUNS["crnn-uni"] = ("crnn", {"model.bidirectional": False})  # a CNN front-end that streams
RUNS["ctc"] = (str(ROOT / "configs" / "yesno-ctc.yaml"), {"train.max_epochs": 3, "train.batch_size": 8})
RUNS["ctc-uni"] = (str(ROOT / "configs" / "yesno-ctc.yaml"),
                   {"train.max_epochs": 3, "train.batch_size": 8, "model.bidirectional": False, "model.normalize": "frame"})
DROP = {"train_seconds", "total_seconds", "hardware"}


def _metrics(path: Path) -> dict:
    m = json.loads(path.read_text())
    return {k: v for k, v in m.items() if k not in DROP}


def _stream(s, waves: list, chunk: int) -> list:
    """Outputs after each chunk and at the end, per wave: probabilities, or (CTC) tokens and the path probability."""
    out = []
    for w in waves:
        s.reset()
        steps = []
        for i in range(0, len(w), chunk):
            s.push_audio(w[i : i + chunk])
            steps.append(_reading(s))
        s.finish()
        steps.append(_reading(s))
        out.append(steps)
    return out


def _reading(s):
    if getattr(s, "ctc", None) is not None:
        return {"tokens": s.tokens(), "p": s.path_probability()}
    p = s.probabilities()
    return None if p is None else [float(x) for x in p]


def record_run(name: str, data: str, work: Path, files: list[str]) -> dict:
    import numpy as np

    import specrnn
    from specrnn.errors import SpecrnnError
    from specrnn.audio import load_audio

    config, extra = RUNS[name]
    overrides = {**FAST, **extra} if not name.startswith("ctc") else {"train.threads": 1, **extra}
    run = work / name
    specrnn.train(data, out=run, config=config, overrides=overrides, overwrite=True, log=None)
    rec: dict = {"metrics": _metrics(run / "metrics.json")}
    pred = specrnn.load(run, device="cpu")
    rec["predict"] = [{"label": p.label, "probabilities": p.probabilities, "error": p.error} for p in pred.predict(files)]
    f = pred.cfg.features
    waves = [load_audio(p, f.sample_rate, f.max_seconds, f.crop) for p in files[:4]]
    try:
        rec["stream"] = _stream(pred.stream(), waves, int(0.1 * f.sample_rate))
    except SpecrnnError as e:
        rec["stream"] = f"refused: {e}"
    try:
        import onnxruntime as ort

        from specrnn.export import export_run
    except ImportError as e:
        rec["onnx"] = f"skipped: {e}"
        return rec
    onnx_path = work / f"{name}.onnx"
    try:
        export_run(run, onnx_path, check=False)
    except SpecrnnError as e:  # the known-wrong seed recipes are not exported
        rec["onnx"] = f"refused: {e}"
        return rec
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    mult = int(json.loads(meta.get("time_multiple", "1")))
    feats = pred.features_of(waves)
    T = max(len(x) for x in feats)
    T += (-T) % mult
    x = np.zeros((len(feats), T, feats[0].shape[1]), np.float32)
    for i, a in enumerate(feats):
        x[i, : len(a)] = a
    lengths = np.array([len(a) for a in feats], np.int64)
    rec["onnx"] = [o.tolist() for o in sess.run(None, {"features": x, "lengths": lengths})]
    try:
        export_run(run, work / f"{name}-stream.onnx", streaming=True, check=False)
    except SpecrnnError as e:
        rec["onnx_stream"] = f"refused: {e}"
        return rec
    from specrnn import export as ex

    driver = getattr(ex, "OnnxStreamingClassifier", None)
    if driver is None:  # after the refactor the driver lives with the streaming code
        from specrnn.inference.streaming import OnnxStreamingClassifier as driver
    rec["onnx_stream"] = _stream(driver(work / f"{name}-stream.onnx"), waves, int(0.1 * f.sample_rate))
    return rec


def record(out: Path, work: Path | None, only: list[str] | None) -> None:
    from specrnn.demo import make_demo

    work = Path(work or tempfile.mkdtemp(prefix="specrnn-parity-"))
    demo = make_demo(work / "demo", per_class=12, seed=0)
    demo_files = sorted(str(p) for p in demo.rglob("*.wav"))[::9]
    results = {}
    for name in only or RUNS:
        if name.startswith("ctc"):
            if not YESNO.is_file():
                results[name] = "skipped: no yesno corpus"
                continue
            data, files = str(YESNO), sorted(str(p) for p in (YESNO.parent / "waves_yesno").glob("*.wav"))[::12]
        else:
            data, files = str(demo), demo_files
        print(f"parity: {name}", file=sys.stderr, flush=True)
        results[name] = record_run(name, data, work, files)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


def _diff(a, b, where: str, worst: dict) -> None:
    """Largest absolute difference per top-level output; structure and strings must match exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            worst[where] = f"keys differ: {sorted(set(a) ^ set(b))}"
            return
        for k in a:
            _diff(a[k], b[k], where, worst)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            worst[where] = f"lengths differ: {len(a)} vs {len(b)}"
            return
        for x, y in zip(a, b):
            _diff(x, y, where, worst)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        d = 0.0 if (a == b or (math.isnan(a) and math.isnan(b))) else abs(a - b)
        if not isinstance(worst.get(where), str):
            worst[where] = max(worst.get(where, 0.0), d)
    elif a != b:
        worst[where] = f"{str(a)[:80]!r} vs {str(b)[:80]!r}"


def compare(before: Path, after: Path, tol: float, common: bool = False) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    bad = 0
    for run in sorted(set(a) | set(b)):
        if run not in a or run not in b:
            print(f"{run:12s} only in {'after' if run in b else 'before'}")
            bad += not common
            continue
        if isinstance(a[run], str) or isinstance(b[run], str):
            print(f"{run:12s} {a[run] if isinstance(a[run], str) else b[run]}")
            continue
        for part in sorted(set(a[run]) | set(b[run])):
            worst: dict = {}
            _diff(a[run].get(part), b[run].get(part), part, worst)
            d = worst.get(part, 0.0)
            ok = not isinstance(d, str) and d <= tol
            bad += not ok
            print(f"{run:12s} {part:12s} {'max diff ' + format(d, '.2e') if not isinstance(d, str) else d}"
                  f"{'' if ok else '   <- DIFFERS'}")
    print("parity: same within", tol if not bad else f"{tol}: NO, {bad} output(s) differ")
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--work", type=Path)
    r.add_argument("--only", nargs="+", choices=list(RUNS))
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--tol", type=float, default=1e-6)
    c.add_argument("--common", action="store_true", help="compare the runs both hold (a recording made with --only)")
    a = p.parse_args(argv)
    if a.cmd == "record":
        record(a.out, a.work, a.only)
        return 0
    return compare(a.before, a.after, a.tol, a.common)


if __name__ == "__main__":
    sys.exit(main())
