"""Experiment (not a feature): one round of self-training on the held-out speaker, after per-speaker CMN.

Transductive, like the speaker's mean in `model.normalize: group`: the held-out speaker's unlabelled clips are
labelled by a fold's trained model (the teacher, from a `specrnn cv` folder), the confident ones (top probability
>= --threshold) join the training rows with those predicted labels, and a new model (the student, same config and
seed) is trained from scratch. Test labels are only read to score the student and to count how many pseudo-labels
were right. The pseudo-labelled rows point at symlinks, so no file is both a training and a test row by path, and
form a group of their own (mean features over the confident clips only).

python -m benchmarks.loso_self_training CV_DIR [--seed 0] [--threshold 0.9] [--folds george,...]
Writes benchmarks/out/loso_self_training-seedN.json.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np

from .common import machine, write_json


def pseudo_labelled(teacher: Path, work: Path, threshold: float) -> tuple[Path, dict]:
    """A manifest: the teacher's train and val rows, its test speaker's confident clips as training rows with
    predicted labels (symlinked), and the test rows; and counts of what was added."""
    from specrnn.data.dataset import model_input_set
    from specrnn.data.manifest import load_manifest
    from specrnn.inference import Predictor

    p = Predictor.load(teacher, device="cpu")
    man = load_manifest(teacher / "split.csv")
    fs = model_input_set(man, p.cfg, p.classes, "test", "teacher")
    probs = p.probabilities(p.logits_from_features(fs.features))
    keep = np.flatnonzero(probs.max(1) >= threshold)
    guess = probs.argmax(1)
    links = work / "pseudo"
    links.mkdir(parents=True, exist_ok=True)
    group_of = dict(zip(man.paths, man.groups))
    rows = [["path", "label", "split", "group"]]
    rows += [[path, lab, split, g] for path, lab, split, g in zip(man.paths, man.labels, man.splits, man.groups)]
    for i in keep:
        link = links / Path(fs.paths[i]).name
        if not link.exists():
            os.symlink(os.path.realpath(fs.paths[i]), link)
        # a group of its own (the leak check refuses one group in two splits); its mean: the confident clips'
        rows.append([str(link), p.classes[guess[i]], "train", group_of[fs.paths[i]] + "-pseudo"])
    out = work / "manifest.csv"
    with open(out, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    right = int(np.sum(guess[keep] == np.asarray(fs.targets)[keep]))
    return out, {"teacher_accuracy": float(np.mean(guess == np.asarray(fs.targets))), "pseudo_labelled": int(len(keep)),
                 "test_clips": len(fs), "pseudo_labels_right": right}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cv_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--folds", default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/loso_self_training"))
    a = ap.parse_args()
    import specrnn

    folds = a.folds.split(",") if a.folds else sorted(p.name.removeprefix("fold-") for p in a.cv_dir.glob("fold-*"))
    result = {"cv_dir": str(a.cv_dir), "seed": a.seed, "threshold": a.threshold, "machine": machine(), "folds": {}}
    for fold in folds:
        teacher = a.cv_dir / f"fold-{fold}" / f"seed-{a.seed}"
        work = a.work / f"{fold}-seed{a.seed}-t{a.threshold}"
        manifest, info = pseudo_labelled(teacher, work, a.threshold)
        m = specrnn.train(manifest, out=work / "run", config=str(teacher / "config.yaml"), overwrite=True, log=None)
        info["student_accuracy"] = m["test"]["accuracy"]
        result["folds"][fold] = info
        print(fold, info, flush=True)
        result["mean_teacher"] = float(np.mean([f["teacher_accuracy"] for f in result["folds"].values()]))
        result["mean_student"] = float(np.mean([f["student_accuracy"] for f in result["folds"].values()]))
        write_json(f"loso_self_training-seed{a.seed}", result)
    print(f"teacher {100 * result['mean_teacher']:.2f}%, student {100 * result['mean_student']:.2f}%")


if __name__ == "__main__":
    main()
