"""Two checks on leave-one-speaker-out CV folders (specrnn cv --leave-one-group-out), for docs/experiments.md:

- speaker probe: how well a logistic regression (5-fold CV) tells the training speaker from a model's pooled
  embedding, on each fold's validation clips (training speakers when data.group_val is false; clips not trained on);
- ensemble: the test accuracy of every model of several CV folders used together (class probabilities averaged),
  per held-out speaker, where `specrnn cv` itself only ensembles the seeds of one folder.

python -m benchmarks.loso_checks --probe CV_DIR [CV_DIR ...] --ensemble CV_DIR [CV_DIR ...]
Writes benchmarks/out/loso_checks.json. Not part of `python -m benchmarks`: it reads CV folders made beforehand.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .common import machine, write_json


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


def ensemble(cv_dirs: list[Path]) -> dict:
    """Per held-out speaker: accuracy of all the folders' models together, and how many models that is."""
    from specrnn.crossval import fold_test_probabilities

    out = {}
    for fold in _folds(cv_dirs[0]):
        runs = [r for d in cv_dirs for r in _models(d, fold)]
        probs, targets = fold_test_probabilities(runs, cv_dirs[0] / f"fold-{fold}" / "data.csv")
        out[fold] = {"models": len(runs), "accuracy": float((probs.argmax(-1) == targets).mean())}
    return {"folders": [str(d) for d in cv_dirs], "folds": out, "mean": float(np.mean([f["accuracy"] for f in out.values()]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.loso_checks")
    ap.add_argument("--probe", nargs="*", default=[], type=Path, help="CV folders whose seed-0 embeddings are probed")
    ap.add_argument("--ensemble", nargs="*", default=[], type=Path, help="CV folders whose models are used together")
    a = ap.parse_args(argv)
    res: dict = {"suite": "loso_checks", "machine": machine(), "probe": [], "ensemble": None}
    for d in a.probe:
        res["probe"].append(speaker_probe(d))
        print(f"speaker probe {d}: " + " ".join(f"{k} {100 * v['accuracy']:.1f}" for k, v in res["probe"][-1]["folds"].items())
              + f"; mean {100 * res['probe'][-1]['mean']:.1f}%", flush=True)
    if a.ensemble:
        res["ensemble"] = ensemble(a.ensemble)
        e = res["ensemble"]
        print("together: " + " ".join(f"{k} {100 * v['accuracy']:.1f} ({v['models']})" for k, v in e["folds"].items())
              + f"; mean {100 * e['mean']:.2f}%")
    print(f"wrote {write_json('loso_checks', res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
