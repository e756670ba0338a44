"""Experiment (not a feature): one round of self-training on the held-out speaker, after per-speaker CMN.

Transductive, like the speaker's mean in `model.normalize: group`: the held-out speaker's unlabelled clips are
labelled by a fold's trained model (the teacher, from a `specrnn cv` folder; or all the fold's models of
several CV folders, their probabilities averaged), the confident ones (top probability
>= --threshold) join the training rows with those predicted labels, and a new model (the student, same config and
seed) is trained from scratch. Test labels are only read to score the student and to count how many pseudo-labels
were right. The pseudo-labelled rows point at symlinks, so no file is both a training and a test row by path; they form a
group of their own, normalised with the speaker's mean over all of its clips.

python -m benchmarks.loso_self_training CV_DIR [CV_DIR ...] [--seed 0] [--threshold 0.9] [--teachers seed|all]
    [--folds george,...]
Writes benchmarks/out/loso_self_training-seedN-tT-TEACHERS.json (folds already there are not rerun).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np

from .common import OUT, machine, write_json


def pseudo_labelled(teachers: list[Path], base: Path, work: Path, threshold: float) -> tuple[Path, dict]:
    """A manifest: the base run's train and val rows, the fold's test speaker's clips that the teachers (their class
    probabilities averaged) label confidently as training rows with those labels (symlinked), and the test rows;
    and counts of what was added."""
    from specrnn.crossval import fold_test_probabilities
    from specrnn.data.manifest import load_manifest

    probs, targets = fold_test_probabilities(teachers, base.parent / "data.csv")
    test = load_manifest(base.parent / "data.csv").where_split("test")
    assert len(test) == len(targets), "unusable test files: not handled by this experiment"
    classes = json.loads((base / "metrics.json").read_text())["classes"]
    keep = np.flatnonzero(probs.max(1) >= threshold)
    guess = probs.argmax(1)
    links = work / "pseudo"
    links.mkdir(parents=True, exist_ok=True)
    man = load_manifest(base / "split.csv")
    rows = [["path", "label", "split", "group"]]
    rows += [[path, lab, split, g] for path, lab, split, g in zip(man.paths, man.labels, man.splits, man.groups)]
    for i in keep:
        link = links / Path(test.paths[i]).name
        if not link.exists():
            os.symlink(os.path.realpath(test.paths[i]), link)
        # a group of its own (the leak check refuses one group in two splits), normalised with the speaker's mean
        rows.append([str(link), classes[guess[i]], "train", test.groups[i] + PSEUDO])
    out = work / "manifest.csv"
    with open(out, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    right = int(np.sum(guess[keep] == targets[keep]))
    return out, {"teachers": len(teachers), "teacher_accuracy": float(np.mean(guess == targets)),
                 "pseudo_labelled": int(len(keep)), "test_clips": len(targets), "pseudo_labels_right": right}


PSEUDO = "-pseudo"


def speaker_means_for_pseudo_rows() -> None:
    """Give the pseudo-labelled group the mean of the whole speaker (its clips as test rows), not of its confident
    clips alone, whose digit mix differs: group_means() ignores the pseudo rows and aliases their group."""
    import specrnn.features as F

    plain = F.group_means

    def means(features, groups):
        real = [(f, g) for f, g in zip(features, groups) if not g.endswith(PSEUDO)]
        out = plain([f for f, _ in real], [g for _, g in real])
        out.update({g: out[g.removesuffix(PSEUDO)] for g in set(groups) if g.endswith(PSEUDO)})
        return out

    F.group_means = means


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cv_dirs", type=Path, nargs="+", help="the first one's seed-N run is the student's base (config, split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--teachers", choices=["seed", "all"], default="seed",
                    help="seed: the base run alone; all: every run of the fold in every CV folder, averaged")
    ap.add_argument("--folds", default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/loso_self_training"))
    ap.add_argument("--part", default="", help="a name for this share of the folds, when two processes split them")
    a = ap.parse_args()
    import specrnn

    speaker_means_for_pseudo_rows()
    first = a.cv_dirs[0]
    folds = a.folds.split(",") if a.folds else sorted(p.name.removeprefix("fold-") for p in first.glob("fold-*"))
    name = f"loso_self_training-seed{a.seed}-t{a.threshold:g}-{a.teachers}" + (f"-{a.part}" if a.part else "")
    done = OUT / f"{name}.json"  # folds already measured (same CV folders) are kept, so runs can be split
    old = json.loads(done.read_text()) if done.is_file() else {}
    dirs = [str(d) for d in a.cv_dirs]
    result = {"cv_dirs": dirs, "seed": a.seed, "threshold": a.threshold, "teachers": a.teachers, "machine": machine(),
              "folds": old.get("folds", {}) if old.get("cv_dirs") == dirs else {}}
    for fold in folds:
        if fold in result["folds"]:
            continue
        base = first / f"fold-{fold}" / f"seed-{a.seed}"
        teachers = [base] if a.teachers == "seed" else sorted(r for d in a.cv_dirs for r in (d / f"fold-{fold}").glob("seed-*")
                                                             if (r / "metrics.json").is_file())
        work = a.work / f"{fold}-seed{a.seed}-t{a.threshold:g}-{a.teachers}"
        manifest, info = pseudo_labelled(teachers, base, work, a.threshold)
        m = specrnn.train(manifest, out=work / "run", config=str(base / "config.yaml"), overwrite=True, log=None)
        info["student_accuracy"] = m["test"]["accuracy"]
        result["folds"][fold] = info
        print(fold, info, flush=True)
        result["mean_teacher"] = float(np.mean([f["teacher_accuracy"] for f in result["folds"].values()]))
        result["mean_student"] = float(np.mean([f["student_accuracy"] for f in result["folds"].values()]))
        write_json(name, result)
    print(f"teacher {100 * result['mean_teacher']:.2f}%, student {100 * result['mean_student']:.2f}%")


if __name__ == "__main__":
    main()
