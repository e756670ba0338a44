"""GPU paths checked against the CPU: batched features, cuDNN RNNs (packed and padded-exact), padding invariance
in fp32 and bf16 autocast, mixed-precision training through `specrnn train`, a GPU-trained model used on CPU, and
per-speaker normalisation (leave-one-speaker-out `cv`, then enrolled prediction on both devices; --sections group_norm).

Run on a machine with CUDA (it also runs on CPU, comparing CPU with itself, to check the script):
python -m experiments.gpu_check [--out DIR] [--quick]
Writes DIR/gpu_check.json (default benchmarks/out). Every section records its error instead of stopping the rest.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import OUT, ROOT, SHARED, fsdd_groups_manifest, fsdd_manifest, machine
from benchmarks.common import timed as common_timed

RESULT: dict = {}


def save(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(RESULT, indent=1, default=str))


def section(name: str, out: Path):
    def wrap(fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                RESULT[name] = fn(*a, **k)
            except Exception:
                RESULT[name] = {"error": traceback.format_exc()}
                print(RESULT[name]["error"], flush=True)
            RESULT.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
            save(out)
            return RESULT[name]
        return run
    return wrap


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev: str, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of `fn()`, waiting for the GPU's queued work inside each timed call."""
    return statistics.median(common_timed(lambda: (fn(), sync(dev)), repeat, warmup))


def fsdd_files(limit: int | None) -> list[Path]:
    files = sorted((SHARED / "fsdd" / "recordings").glob("*.wav"))
    return files[:: max(1, len(files) // limit)][:limit] if limit else files


def env(dev: str) -> dict:
    import lightning

    info = {**machine(), "lightning": lightning.__version__, "device": dev}
    if dev == "cuda":
        info.update(gpu=torch.cuda.get_device_name(), cudnn=torch.backends.cudnn.version(), cuda=torch.version.cuda,
                    bf16=torch.cuda.is_bf16_supported(), allow_tf32_cudnn=torch.backends.cudnn.allow_tf32,
                    allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return info


def features(dev: str, files: list[Path]) -> dict:
    """Each feature kind on the GPU against the CPU: frame counts, largest difference (dB or MFCC units), speed."""
    from specrnn.audio import load_audio
    from specrnn.config import load_config
    from specrnn.features import FeatureExtractor

    waves = [load_audio(f, 8000) for f in files]
    out = {"clips": len(waves), "seconds_of_audio": round(sum(map(len, waves)) / 8000, 1)}
    for kind in ("logmel", "mfcc", "logpower"):
        cfg = load_config(None, [f"features.kind={kind}", "features.sample_rate=8000"]).features
        cpu_x, gpu_x = FeatureExtractor(cfg), FeatureExtractor(cfg).to(dev)
        a, b = cpu_x.extract(waves, 64), gpu_x.extract(waves, 64)
        same_len = [x.shape == y.shape for x, y in zip(a, b)]
        diffs = [float(np.abs(x - y).max()) for x, y, s in zip(a, b, same_len) if s]
        t_cpu = timed(lambda: cpu_x.extract(waves, 64), "cpu", repeat=3)
        t_gpu = timed(lambda: gpu_x.extract(waves, 64), dev, repeat=3)
        out[kind] = {"frame_count_mismatches": len(same_len) - sum(same_len), "max_abs_diff": max(diffs),
                     "median_max_abs_diff": statistics.median(diffs), "cpu_s": round(t_cpu, 4), "gpu_s": round(t_gpu, 4),
                     "gpu_speedup": round(t_cpu / t_gpu, 2), "cpu_threads": torch.get_num_threads()}
    return out


def _features_for_models(files: list[Path], n: int) -> list[np.ndarray]:
    from specrnn.audio import load_audio
    from specrnn.config import load_config
    from specrnn.features import FeatureExtractor

    cfg = load_config(None, ["features.sample_rate=8000"]).features
    return FeatureExtractor(cfg).extract([load_audio(f, 8000) for f in files[:n]], 64)


def _logits(model, x, lengths):
    from specrnn.tasks.classification import clip_logits

    out = model(x, lengths)
    return clip_logits(out).float() if not isinstance(out, tuple) else out[0].float()


def models(dev: str, feats: list[np.ndarray]) -> dict:
    """Every preset (and frame/CTC heads): GPU fp32 vs CPU, a clip alone vs in a padded batch on the GPU in fp32
    and in bf16 autocast, bf16 vs fp32, packed vs padded-exact."""
    from specrnn.config import load_config
    from specrnn.data.batching import pad_batch
    from specrnn.models import build_model

    x, lengths = pad_batch([torch.from_numpy(f) for f in feats])
    out = {"batch": list(x.shape), "lengths_min_max": [int(lengths.min()), int(lengths.max())]}
    variants = {p: (p, []) for p in ("gru", "lstm", "bilstm", "crnn", "att-rnn")}
    variants["bigru-ctc"] = ("gru", ["model.head=ctc", "model.bidirectional=true", "features.max_seconds=null"])
    variants["lstm-frame"] = ("lstm", ["model.head=frame"])
    variants["gru-meanstd"] = ("gru", ["model.pooling=meanstd"])
    bf16 = dev == "cuda" and torch.cuda.is_bf16_supported()
    for name, (preset, sets) in variants.items():
        cfg = load_config(preset, sets + ["features.sample_rate=8000"])
        torch.manual_seed(0)
        cpu = build_model(cfg.model, cfg.features.n_features, 10).eval()
        cpu.normalizer.fit(feats)
        gpu = build_model(cfg.model, cfg.features.n_features, 10).to(dev).eval()
        gpu.load_state_dict(cpu.state_dict())
        r = {}
        with torch.no_grad():
            ref = _logits(cpu, x, lengths)
            xg, lg = x.to(dev), lengths.to(dev)
            got = _logits(gpu, xg, lg)
            r["gpu_vs_cpu"] = float((got.cpu() - ref).abs().max())
            alone = [_logits(gpu, xg[i:i + 1, : int(lengths[i])], lg[i:i + 1]) for i in range(len(feats))]
            r["alone_vs_batch_fp32"] = max(float((a[0, : a.shape[1]] - got[i, : a.shape[1]]).abs().max()) if a.dim() == 3
                                           else float((a[0] - got[i]).abs().max()) for i, a in enumerate(alone))
            if bf16:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    got16 = _logits(gpu, xg, lg)
                    alone16 = [_logits(gpu, xg[i:i + 1, : int(lengths[i])], lg[i:i + 1]) for i in range(len(feats))]
                r["bf16_vs_fp32"] = float((got16 - got).abs().max())
                r["logit_scale"] = float(got.abs().max())
                r["alone_vs_batch_bf16"] = max(float((a[0, : a.shape[1]] - got16[i, : a.shape[1]]).abs().max()) if a.dim() == 3
                                               else float((a[0] - got16[i]).abs().max()) for i, a in enumerate(alone16))
            if cfg.model.head == "clip":
                r["same_argmax_gpu_cpu"] = bool((got.cpu().argmax(-1) == ref.argmax(-1)).all())
        out[name] = r
    return out


def rnn_impls(dev: str, feats: list[np.ndarray]) -> dict:
    """Packed (cuDNN over pack_padded_sequence) vs padded-exact: same numbers? which is faster? Forward + backward
    of a 2 x 128 (bi)GRU/LSTM encoder on 64 clips: FSDD's real features (up to 35 frames), and random features of
    ESC-10's length (250 frames, as `stack: 2` makes of 5 s), bucketed (225-250) or not (25-250)."""
    from specrnn.data.batching import pad_batch
    from specrnn.models.encoders import RNNEncoder

    g = torch.Generator().manual_seed(0)
    batches = {"fsdd": pad_batch([torch.from_numpy(f) for f in feats[:64]])}
    for name, lo in (("long-bucketed", 225), ("long-mixed", 25)):
        lengths = torch.randint(lo, 251, (64,), generator=g)
        batches[name] = pad_batch([torch.randn(int(n), 64, generator=g) for n in lengths])
    out = {}
    for bname, (x, lengths) in batches.items():
        x, lengths = x.to(dev), lengths.to(dev)
        for cell in ("gru", "lstm"):
            for bi in (False, True):
                torch.manual_seed(0)
                enc = {impl: RNNEncoder(x.shape[-1], cell, 128, 2, bi, impl=impl).to(dev) for impl in ("packed", "padded")}
                enc["padded"].load_state_dict(enc["packed"].state_dict())
                r = {}
                with torch.no_grad():
                    r["max_abs_diff"] = float((enc["packed"](x, lengths) - enc["padded"](x, lengths)).abs().max())
                for impl, e in enc.items():
                    def step(e=e):
                        e.zero_grad(set_to_none=True)
                        e(x, lengths).square().mean().backward()
                    r[f"{impl}_ms"] = round(1000 * timed(step, dev, repeat=10 if dev == "cuda" else 2, warmup=2 if dev == "cuda" else 1), 2)
                r["padded_over_packed"] = round(r["padded_ms"] / r["packed_ms"], 2)
                out[f"{bname}/{cell}{'-bi' if bi else ''}"] = r
    return out


def _train(csv: Path, run: Path, preset: str | None, sets: list[str], timeout: float, extra: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, "-m", "specrnn", "train", str(csv), "--out", str(run), *(["--config", preset] if preset else []),
           *sum((["--set", s] for s in ["seed=0", *sets]), []), *extra]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"preset": preset, "sets": sets, "error": f"timed out after {timeout} s"}
    r = {"preset": preset, "sets": sets, "rc": p.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    if p.returncode:
        r["stderr"] = p.stderr[-3000:]
        return r
    m = json.loads((run / "metrics.json").read_text())
    r.update(test_accuracy=m["test"]["accuracy"], test_token_error_rate=m["test"].get("token_error_rate"),
             hardware=m.get("hardware"), epochs=m["epochs_run"], best_epoch=m["best_epoch"],
             train_seconds=m["train_seconds"], total_seconds=m["total_seconds"], model=m["model"],
             stdout_tail=p.stdout[-500:])
    if "seeds" in m:
        r["seeds"] = m["seeds"]
    return r


RUNS = {"gru-auto": (None, []), "gru-packed": (None, ["model.rnn_impl=packed"]), "gru-32": (None, ["train.precision=32-true"]),
        "gru-16mixed": (None, ["train.precision=16-mixed", "train.max_epochs=5"]), "crnn-auto": ("crnn", ["train.max_epochs=5"])}


def training(dev: str, work: Path, quick: bool, runs: list[str]) -> dict:
    """`specrnn train` on FSDD's standard split: bf16-mixed (the GPU default), the packed RNN, fp32, fp16 with loss
    scaling, a CRNN. The last two run 5 epochs: they check a code path, not an accuracy."""
    csv = fsdd_manifest("digit")
    out = {}
    for name in runs:
        preset, sets = RUNS[name]
        out[name] = r = _train(csv, work / name, preset, sets + (["train.max_epochs=3"] if quick else []), timeout=150)
        print(name, {k: v for k, v in r.items() if k not in ("stdout_tail", "stderr")}, flush=True)
    return out


def yesno(dev: str, work: Path, seeds: list[int]) -> dict:
    """CTC on the yesno corpus with configs/yesno-ctc.yaml and Kaldi's split (30 clips to train and validate, 30 to test)."""
    out = {}
    for seed in seeds:
        r = _train(SHARED / "yesno" / "labels.csv", work / f"yesno-{seed}", str(ROOT / "configs" / "yesno-ctc.yaml"),
                   [f"seed={seed}"], timeout=200)
        out[f"seed-{seed}"] = r
        print("yesno", seed, {k: v for k, v in r.items() if k not in ("stdout_tail", "stderr")}, flush=True)
    return out


def yesno_best(dev: str, work: Path, seeds: str) -> dict:
    """The yesno config with `train --seeds`: one run per seed on one split, the best-validated kept."""
    r = _train(SHARED / "yesno" / "labels.csv", work / "yesno-best", str(ROOT / "configs" / "yesno-ctc.yaml"), [],
               timeout=560, extra=("--seeds", seeds))
    print("yesno --seeds", seeds, {k: v for k, v in r.items() if k not in ("stdout_tail", "stderr")}, flush=True)
    return r


def use_on_cpu(dev: str, work: Path) -> dict:
    """The GPU-trained default model: predictions on GPU vs CPU, a stream after GPU prediction, ONNX export."""
    import specrnn

    run = work / "gru-auto"
    files = sorted((SHARED / "fsdd" / "recordings").glob("*_[0-4].wav"))[::5]
    gpu, cpu = specrnn.load(run, device=dev), specrnn.load(run, device="cpu")
    pg, pc = gpu.predict(files), cpu.predict(files)
    diff = max(abs(a.probabilities[c] - b.probabilities[c]) for a, b in zip(pg, pc) for c in a.probabilities)
    agree = sum(a.label == b.label for a, b in zip(pg, pc))
    r = {"files": len(files), "max_prob_diff_gpu_cpu": diff, "same_label": agree,
         "accuracy_gpu": sum(p.label == Path(p.path).name[0] for p in pg) / len(pg)}
    from specrnn.audio import load_audio

    s = gpu.stream()
    wave = load_audio(files[0], gpu.cfg.features.sample_rate)
    for i in range(0, len(wave), 800):
        s.push_audio(wave[i:i + 800])
    probs = s.finish()
    r["stream_vs_offline"] = float(np.abs(probs - np.array([pc[0].probabilities[c] for c in cpu.classes])).max())
    again = gpu.predict(files[:3])  # the Predictor must still work after stream()
    r["predict_after_stream_ok"] = all(a.label == b.label for a, b in zip(again, pg[:3]))
    p = subprocess.run([sys.executable, "-m", "specrnn", "export", str(run), "--out", str(work / "gru.onnx")],
                       capture_output=True, text=True, timeout=120)
    r["export_rc"], r["export_out"] = p.returncode, (p.stdout + p.stderr)[-800:]
    p = subprocess.run([sys.executable, "-m", "specrnn", "evaluate", str(run), "--json"], capture_output=True, text=True, timeout=120)
    r["evaluate_rc"] = p.returncode
    if p.returncode == 0:
        r["evaluate_accuracy_gpu"] = json.loads(p.stdout)["accuracy"] if p.stdout.strip().startswith("{") else p.stdout[-300:]
    else:
        r["evaluate_err"] = p.stderr[-800:]
    return r


def _tone_sequences(root: Path, n: int) -> Path:
    """A CSV of n clips, each 2-4 tones (300 Hz 'lo', 2.5 kHz 'hi'; 120 ms with 80 ms gaps) labelled by their sequence."""
    import soundfile as sf

    rng, sr = np.random.default_rng(0), 16000
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for i in range(n):
        words = rng.choice(["lo", "hi"], size=rng.integers(2, 5)).tolist()
        parts = [np.zeros(1600)]
        for w in words:
            t = np.arange(int(0.12 * sr)) / sr
            parts += [0.3 * np.sin(2 * np.pi * (300 if w == "lo" else 2500) * t) + 0.01 * rng.standard_normal(len(t)), np.zeros(1280)]
        sf.write(root / f"seq_{i}.wav", np.concatenate(parts).astype(np.float32), sr)
        rows.append(f"seq_{i}.wav,{' '.join(words)}")
    (root / "seq.csv").write_text("\n".join(rows) + "\n")
    return root / "seq.csv"


def ctc(dev: str, work: Path) -> dict:
    """A unidirectional CTC model trained on the device with `--seeds 0,1` (its default precision); then decoding,
    n-best and streaming from the device predictor against the CPU one."""
    import specrnn
    from specrnn.audio import load_audio

    csv = _tone_sequences(work / "tones", 48)
    sets = ["model.head=ctc", "features.max_seconds=null", "model.bidirectional=false", "model.hidden=32", "model.stack=4",
            "model.normalize=global", "features.top_db=null", "train.batch_size=4", "train.lr=1e-2", "augment.time_masks=0",
            "data.val_fraction=0.2", "train.max_epochs=15"]
    run = work / "ctc-seeds"
    cmd = [sys.executable, "-m", "specrnn", "train", str(csv), "--out", str(run), "--seeds", "0,1", *sum((["--set", x] for x in sets), [])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    r: dict = {"rc": p.returncode}
    if p.returncode:
        r["stderr"] = p.stderr[-3000:]
        return r
    m = json.loads((run / "metrics.json").read_text())
    r.update(hardware=m["hardware"], chosen=m["seeds"]["chosen"], seeds=m["seeds"]["runs"])
    files = sorted((work / "tones").glob("*.wav"))[:16]
    gpu, cpu = specrnn.load(run, device=dev), specrnn.load(run, device="cpu")
    pg, pc = gpu.predict(files, n_best=3), cpu.predict(files, n_best=3)
    r["same_labels"] = sum(a.label == b.label for a, b in zip(pg, pc))
    r["same_n_best"] = sum(list(a.probabilities) == list(b.probabilities) for a, b in zip(pg, pc))
    r["n_best_max_prob_diff"] = max(abs(a.probabilities[k] - b.probabilities.get(k, 0.0)) for a, b in zip(pg, pc) for k in a.probabilities)
    same = 0
    for f, want in zip(files, pc):
        s = gpu.stream()
        wave = load_audio(f, gpu.cfg.features.sample_rate)
        for i in range(0, len(wave), 1600):
            s.push_audio(wave[i:i + 1600])
        s.finish()
        same += " ".join(s.tokens()) == want.label
    r["stream_equals_offline"] = f"{same} of {len(files)}"
    return r


def group_norm(dev: str, work: Path, quick: bool) -> dict:
    """Per-speaker normalisation on the device: FSDD leave-one-speaker-out with configs/fsdd-speaker-norm.yaml, seed 0
    (with the donor voices of experiments.synth_speakers as --train-extra when SHARED/donors holds them; quick: 3 speakers,
    2 epochs), then each fold's model scores its held-out speaker, enrolled on all of its clips, on the device and on the
    CPU (per-speaker means, normalisation and the model on both)."""
    import specrnn
    from specrnn.data.manifest import load_manifest

    csv = fsdd_groups_manifest()
    if quick:
        rows = [line for i, line in enumerate(csv.read_text().splitlines()) if i == 0 or "_george_" in line or "_jackson_" in line
                or "_lucas_" in line]
        csv = work / "fsdd_loso_3.csv"
        csv.write_text("\n".join(rows) + "\n")
    extra = SHARED / "donors" / "manifest.csv"
    run = work / "loso-group"
    cmd = [sys.executable, "-m", "specrnn", "cv", str(csv), "--out", str(run), "--leave-one-group-out", "--seeds", "0",
           "--config", str(ROOT / "configs" / "fsdd-speaker-norm.yaml"), *(["--train-extra", str(extra)] if extra.is_file() else []),
           *(["--set", "train.max_epochs=2"] if quick else [])]
    t0, r = time.perf_counter(), {"train_extra": extra.is_file()}
    try:  # a cut-off CV still leaves its finished folds to check
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=150 if quick else 380)
        r.update(rc=p.returncode, stdout_tail=p.stdout[-1500:], stderr=p.stderr[-3000:] if p.returncode else "")
    except subprocess.TimeoutExpired:
        r["timed_out"] = True
    r["wall_s"] = round(time.perf_counter() - t0, 1)
    if (run / "cv.json").is_file():
        cv = json.loads((run / "cv.json").read_text())
        r.update(accuracy_mean=cv["accuracy_mean"], folds={f["fold"]: f["accuracy"] for f in cv["folds"]})
    folds = {}
    for fold_dir in sorted(run.glob("fold-*")):
        seed = fold_dir / "seed-0"
        if not (seed / "metrics.json").is_file():
            continue
        m = json.loads((seed / "metrics.json").read_text())
        test = load_manifest(fold_dir / "data.csv").where_split("test")
        held, truth = test.paths, test.labels
        gpu, cpu = specrnn.load(seed, device=dev).enroll(held), specrnn.load(seed, device="cpu").enroll(held)
        pg, pc = gpu.predict(held), cpu.predict(held)
        folds[fold_dir.name] = {
            "hardware": m.get("hardware"), "train_seconds": m["train_seconds"], "cv_test_accuracy": m["test"]["accuracy"],
            "mean_diff_gpu_cpu": float(np.abs(gpu.group_mean - cpu.group_mean).max()),
            "max_prob_diff_gpu_cpu": max(abs(a.probabilities[c] - b.probabilities[c]) for a, b in zip(pg, pc) for c in a.probabilities),
            "same_label": f"{sum(a.label == b.label for a, b in zip(pg, pc))} of {len(held)}",
            "accuracy_gpu_enrolled": sum(a.label == t for a, t in zip(pg, truth)) / len(held),
            "accuracy_cpu_enrolled": sum(b.label == t for b, t in zip(pc, truth)) / len(held)}
        print(fold_dir.name, folds[fold_dir.name], flush=True)
    r["folds_checked"] = folds
    return r


SECTIONS = ("env", "features", "models", "rnn_impls", "training", "use_on_cpu", "yesno", "ctc", "yesno_best", "group_norm")
LONG = ("yesno", "yesno_best", "group_norm")  # minutes each: run when named in --sections


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--work", type=Path, default=Path("/tmp/specrnn_gpu_check"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sections", default=",".join(s for s in SECTIONS if s not in LONG))
    ap.add_argument("--runs", default="gru-auto,gru-32,gru-16mixed,crnn-auto", help=f"training runs, of {sorted(RUNS)}")
    ap.add_argument("--yesno-seeds", default="0,1")
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a.work.mkdir(parents=True, exist_ok=True)
    todo = set(a.sections.split(",")) | {"env"}
    section("env", a.out)(env)(dev)
    if "features" in todo:
        section("features", a.out)(features)(dev, fsdd_files(300 if a.quick else None))
    feats = _features_for_models(fsdd_files(64), 64) if todo & {"models", "rnn_impls"} else []
    if "models" in todo:
        section("models", a.out)(models)(dev, feats[:24])
    if "rnn_impls" in todo:
        section("rnn_impls", a.out)(rnn_impls)(dev, feats)
    if "training" in todo:
        section("training", a.out)(training)(dev, a.work, a.quick, a.runs.split(","))
    if "use_on_cpu" in todo:
        section("use_on_cpu", a.out)(use_on_cpu)(dev, a.work)
    if "yesno" in todo:
        section("yesno", a.out)(yesno)(dev, a.work, [int(x) for x in a.yesno_seeds.split(",")])
    if "ctc" in todo:
        section("ctc", a.out)(ctc)(dev, a.work)
    if "yesno_best" in todo:
        section("yesno_best", a.out)(yesno_best)(dev, a.work, a.yesno_seeds)
    if "group_norm" in todo:
        section("group_norm", a.out)(group_norm)(dev, a.work, a.quick)
    print(json.dumps(RESULT, indent=1, default=str)[-6000:])


if __name__ == "__main__":
    main()
