"""How much audio a new speaker must enrol for a per-speaker normalised model (model.normalize: group).

A CV run of such a model (leave-one-speaker-out) scores each held-out speaker with the mean features of all of
that speaker's clips, as `evaluate` does. Deployed, `specrnn predict --enroll` sees only a few of them. For each
fold run this replays that: K random clips of the held-out speaker enrol it (their mean features), and the
speaker's other clips are scored; K = 0 is predicting one file with no --enroll (the clip enrols itself).

python -m experiments.loso_enrolment CV_DIR [--sizes 0,1,3,10,30,all] [--draws 5]
Writes benchmarks/out/loso_enrolment.json.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_json


def fold_accuracies(run_dir: Path, sizes: list[int | None], draws: int, seed: int = 0) -> dict[str, float]:
    """Accuracy on the fold's test speaker for each enrolment size (None: all of its clips, as CV scores it)."""
    from specrnn.data.dataset import build_feature_set
    from specrnn.data.manifest import load_manifest
    from specrnn.inference import Predictor

    p = Predictor.load(run_dir, device="cpu")
    test = load_manifest(run_dir / "split.csv").where_split("test")
    fs = build_feature_set(test, p.cfg.features, p.classes, p.cfg.data.cache_dir, desc="enrolment")
    feats, y = fs.features, np.asarray(fs.targets)
    rng = np.random.default_rng(seed)
    out = {}
    for k in sizes:
        if k == 0:  # each clip alone: its own mean
            x = [f - f.mean(0) for f in feats]
            out["0"] = float(np.mean(p.logits_from_features(x).argmax(1) == y))
            continue
        accs = []
        for _ in range(1 if k is None else draws):
            enrol = np.arange(len(feats)) if k is None else rng.choice(len(feats), k, replace=False)
            frames = np.concatenate([feats[i] for i in enrol]).astype(np.float64)
            mean = frames.mean(0).astype(np.float32)
            scored = np.arange(len(feats)) if k is None else np.setdiff1d(np.arange(len(feats)), enrol)
            logits = p.logits_from_features([feats[i] - mean for i in scored])
            accs.append(float(np.mean(logits.argmax(1) == y[scored])))
        out["all" if k is None else str(k)] = statistics.mean(accs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cv_dir", type=Path)
    ap.add_argument("--sizes", default="0,1,3,10,30,all")
    ap.add_argument("--draws", type=int, default=5)
    a = ap.parse_args()
    sizes = [None if s == "all" else int(s) for s in a.sizes.split(",")]
    runs = sorted(a.cv_dir.glob("fold-*/seed-*"))
    per_run = {}
    for run in runs:
        if (run / "metrics.json").is_file():
            per_run[f"{run.parent.name}/{run.name}"] = fold_accuracies(run, sizes, a.draws)
            print(run.parent.name, run.name, per_run[f"{run.parent.name}/{run.name}"], flush=True)
    folds = sorted({r.split("/")[0] for r in per_run})
    keys = ["all" if s is None else str(s) for s in sizes]
    # per fold: the mean over seeds; overall: the mean over folds (as cv.json)
    by_fold = {f: {k: statistics.mean(v[k] for r, v in per_run.items() if r.startswith(f + "/")) for k in keys} for f in folds}
    mean = {k: statistics.mean(by_fold[f][k] for f in folds) for k in keys}
    path = write_json("loso_enrolment", {"cv_dir": str(a.cv_dir), "draws": a.draws, "machine": machine(),
                                         "mean_accuracy": mean, "per_fold": by_fold, "per_run": per_run})
    print("mean over folds:", {k: f"{100 * v:.2f}%" for k, v in mean.items()}, "->", path)


if __name__ == "__main__":
    main()
