"""Two checks on leave-one-speaker-out CV folders (specrnn cv --leave-one-group-out), for docs/experiments.md:

- speaker probe: how well a logistic regression (5-fold CV) tells the training speaker from a model's pooled
  embedding, on each fold's validation clips (training speakers when data.group_val is false; clips not trained on);
- ensemble: the test accuracy of every model of several CV folders used together (class probabilities averaged),
  per held-out speaker, where `specrnn cv` itself only ensembles the seeds of one folder;
- with --warps, test-time augmentation: each model also scores each clip with its mel axis warped by each factor
  (the training augmentation `augment.freq_warp`, with a fixed factor), and all those probabilities are averaged;
  with --vtln as well, one factor is chosen per held-out speaker from its unlabelled clips (vocal-tract length
  normalisation by the ensemble's confidence).

python -m experiments.loso_checks --probe CV_DIR [CV_DIR ...] --ensemble CV_DIR [CV_DIR ...] [--warps W,W,... [--vtln]]
Writes benchmarks/out/loso_checks.json. Not part of `python -m benchmarks`: it reads CV folders made beforehand.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_json


def _models(cv_dir: Path, fold: str, seeds: str = "seed-*") -> list[Path]:
    return [d for d in sorted((cv_dir / f"fold-{fold}").glob(seeds)) if (d / "metrics.json").is_file()]


def _folds(cv_dir: Path) -> list[str]:
    return [p.name.removeprefix("fold-") for p in sorted(cv_dir.glob("fold-*")) if p.is_dir()]


def speaker_probe(cv_dir: Path) -> dict:
    """Per fold, seed 0: 5-fold CV accuracy of a linear probe predicting the speaker from pooled embeddings."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from specrnn.data.batching import pad_batch
    from specrnn.data.dataset import build_feature_set
    from specrnn.data.manifest import load_manifest
    from specrnn.inference import Predictor

    out = {}
    for fold in _folds(cv_dir):
        run = _models(cv_dir, fold, "seed-0")[0]
        p = Predictor.load(run, device="cpu")
        val = load_manifest(run / "split.csv").where_split("val")
        fs = build_feature_set(val, p.cfg.features, p.classes, p.cfg.data.cache_dir, desc="probe")
        speaker = dict(zip(val.paths, val.groups))
        with torch.no_grad():
            emb = p.model.embed(*pad_batch([torch.from_numpy(f) for f in fs.features])).numpy()
        y = [speaker[q] for q in fs.paths]
        out[fold] = {"accuracy": float(cross_val_score(LogisticRegression(max_iter=2000), emb, y, cv=5).mean()),
                     "speakers": len(set(y)), "clips": len(y)}
    return {"folder": str(cv_dir), "folds": out, "mean": float(np.mean([f["accuracy"] for f in out.values()]))}


def warped_probabilities(runs: list[Path], fold_csv: Path, warps: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(W, N, C): the runs' class probabilities on the fold's test rows, averaged over runs, with each clip's mel
    axis warped by each factor; and the rows' targets. A model's input (MFCCs or log-mels, after its
    normalisation) is warped as the training augmentation `augment.freq_warp` does: MFCCs are turned into the
    log-mel spectrum they encode, its frequency axis stretched, and turned back."""
    import torch

    from specrnn.augment import warp_frequency
    from specrnn.data.dataset import model_input_set
    from specrnn.data.manifest import load_manifest
    from specrnn.features import dct_matrix
    from specrnn.inference import Predictor

    fold, total, targets = load_manifest(fold_csv), 0, None
    for run in runs:
        p = Predictor.load(run, device="cpu")
        fs = model_input_set(fold, p.cfg, p.classes, "test", "ensemble")
        targets = fs.targets if targets is None else targets
        f = p.cfg.features
        dct = dct_matrix(f.n_mels, f.n_mfcc) if f.kind == "mfcc" else torch.eye(fs.features[0].shape[1])
        mels = [torch.from_numpy(x)[None] @ dct.T for x in fs.features]
        total = total + np.stack([p.probabilities(p.logits_from_features(
            [(warp_frequency(m, torch.tensor([w])) @ dct)[0].numpy() for m in mels])) for w in warps])
    return total / len(runs), targets


def ensemble(cv_dirs: list[Path], warps: list[float] | None = None, vtln: bool = False) -> dict:
    """Per held-out speaker: accuracy of all the folders' models together, and how many models that is. With
    `warps`, the probabilities are averaged over the warp factors too (test-time augmentation), or with `vtln`
    one factor is chosen per speaker: the one whose mean top-class probability over the speaker's clips is
    highest (label-free, like the speaker's mean in `model.normalize: group`)."""
    from specrnn.experiments.cv import fold_test_probabilities

    out = {}
    for fold in _folds(cv_dirs[0]):
        runs = [r for d in cv_dirs for r in _models(d, fold)]
        fold_csv = cv_dirs[0] / f"fold-{fold}" / "data.csv"
        row: dict = {"models": len(runs)}
        if not warps:
            probs, targets = fold_test_probabilities(runs, fold_csv)
        else:
            per_warp, targets = warped_probabilities(runs, fold_csv, warps)
            row["accuracy_per_warp"] = {w: float((q.argmax(-1) == targets).mean()) for w, q in zip(warps, per_warp)}
            if vtln:
                k = int(per_warp.max(-1).mean(-1).argmax())
                row["chosen_warp"], probs = warps[k], per_warp[k]
            else:
                probs = per_warp.mean(0)
        row["accuracy"] = float((probs.argmax(-1) == targets).mean())
        out[fold] = row
        print(f"  {fold}: {100 * row['accuracy']:.1f}% ({len(runs)} models"
              + (f", warp {row['chosen_warp']}" if "chosen_warp" in row else "") + ")", flush=True)
    return {"folders": [str(d) for d in cv_dirs], "warps": warps, "vtln": vtln, "folds": out,
            "mean": float(np.mean([f["accuracy"] for f in out.values()]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.loso_checks")
    ap.add_argument("--probe", nargs="*", default=[], type=Path, help="CV folders whose seed-0 embeddings are probed")
    ap.add_argument("--ensemble", nargs="*", default=[], type=Path, help="CV folders whose models are used together")
    ap.add_argument("--warps", default=None, help="test-time mel warp factors, comma-separated, e.g. 0.9,1.0,1.1")
    ap.add_argument("--vtln", action="store_true", help="choose one of --warps per held-out speaker (most confident)")
    a = ap.parse_args(argv)
    if a.vtln and not a.warps:
        ap.error("--vtln chooses among --warps: give them, e.g. --warps 0.9,0.95,1.0,1.05,1.1")
    res: dict = {"suite": "loso_checks", "machine": machine(), "probe": [], "ensemble": None}
    for d in a.probe:
        res["probe"].append(speaker_probe(d))
        print(f"speaker probe {d}: " + " ".join(f"{k} {100 * v['accuracy']:.1f}" for k, v in res["probe"][-1]["folds"].items())
              + f"; mean {100 * res['probe'][-1]['mean']:.1f}%", flush=True)
    if a.ensemble:
        res["ensemble"] = ensemble(a.ensemble, [float(w) for w in a.warps.split(",")] if a.warps else None, a.vtln)
        e = res["ensemble"]
        print("together: " + " ".join(f"{k} {100 * v['accuracy']:.1f} ({v['models']})" for k, v in e["folds"].items())
              + f"; mean {100 * e['mean']:.2f}%")
    print(f"wrote {write_json('loso_checks', res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
