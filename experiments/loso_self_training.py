"""Experiment (not a feature): self-training on the held-out speaker, after per-speaker CMN.

Transductive, like the speaker's mean in `model.normalize: group`. Teachers (every run of a fold in the given CV
folders, optionally each at several test-time mel warps, their probabilities averaged) label the held-out
speaker's unlabelled clips. The confident ones (top probability >= --threshold) join a student's training rows with
those labels, and the student (the rows, config and seed of one run of a CV folder) is trained from scratch. Test
labels are only read to score and to count right pseudo-labels. Pseudo-labelled rows point at symlinks, so no file
is both a training and a test row by path; they form a group of their own, normalised with the speaker's mean over
all of the speaker's clips, as the test rows are.

python -m experiments.loso_self_training prepare WORK --teachers CV_DIR [...] [--teacher-seeds 0] [--warps 0.9,1.0,1.1]
    --students CV_DIR [...] [--seeds 0,1] [--threshold 0.9] [--folds george,...]
python -m experiments.loso_self_training train WORK [--set key=value ...] [--map OLD=NEW ...]
python -m experiments.loso_self_training score WORK [--name NAME]
`train` trains every prepared student not yet trained or claimed (several `train` processes share the work, also
on another machine with --map rewriting path prefixes); `score` writes benchmarks/out/NAME.json.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

from specrnn.files import atomic_write_bytes, write_json as write_json_at

from benchmarks.common import machine, write_json

PSEUDO = "-pseudo"


def teacher_probabilities(runs: list[Path], fold_csv: Path, warps: list[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """The runs' class probabilities on the fold's test rows (averaged over runs, and over warps when given)."""
    from specrnn.experiments.cv import fold_test_probabilities

    from experiments.loso_checks import warped_probabilities

    if warps:
        probs, targets = warped_probabilities(runs, fold_csv, warps)
        return probs.mean(0), targets
    return fold_test_probabilities(runs, fold_csv)


def prepare(work: Path, teachers: list[Path], students: list[Path], seeds: list[int], warps: list[float] | None,
            threshold: float, folds: list[str] | None, teacher_seeds: list[int] | None = None) -> None:
    """Per fold: the teacher's probabilities, the pseudo-label links, and one folder per student (manifest, config)."""
    from specrnn.data.manifest import load_manifest

    for fold in folds or sorted(p.name.removeprefix("fold-") for p in teachers[0].glob("fold-*")):
        fdir = work / fold
        fold_csv = teachers[0] / f"fold-{fold}" / "data.csv"
        runs = sorted(r for d in teachers for r in (d / f"fold-{fold}").glob("seed-*") if (r / "metrics.json").is_file()
                      and (teacher_seeds is None or int(r.name.removeprefix("seed-")) in teacher_seeds))
        if (fdir / "teacher.npz").is_file():  # taught before: only students not yet prepared are added
            was = json.loads((fdir / "teacher.json").read_text())
            now = {"teachers": [str(r) for r in runs], "warps": warps, "threshold": threshold}
            if any(was[k] != v for k, v in now.items()):
                raise SystemExit(f"{fdir}: taught with other teachers, warps or threshold; use another WORK folder")
            old = np.load(fdir / "teacher.npz")
            probs, targets = old["p"], old["t"]
        else:
            probs, targets = teacher_probabilities(runs, fold_csv, warps)
        test = load_manifest(fold_csv).where_split("test")
        assert len(test) == len(targets), "unusable test files: not handled by this experiment"
        classes = json.loads((runs[0] / "metrics.json").read_text())["classes"]
        keep = np.flatnonzero(probs.max(1) >= threshold)
        guess = probs.argmax(1)
        links, pseudo_rows = fdir / "pseudo", []
        links.mkdir(parents=True, exist_ok=True)
        with open(fdir / "links.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            for i in keep:
                link = links / Path(test.paths[i]).name
                if not link.is_symlink():
                    os.symlink(os.path.realpath(test.paths[i]), link)
                w.writerow([str(link), os.path.realpath(test.paths[i])])
                # a group of its own (the leak check refuses one group in two splits)
                pseudo_rows.append([str(link), classes[guess[i]], "train", test.groups[i] + PSEUDO])
        for cv in students:
            for seed in seeds:
                base = cv / f"fold-{fold}" / f"seed-{seed}"
                sdir = fdir / f"{cv.name}-seed{seed}"
                if (sdir / "manifest.csv").is_file():
                    continue
                sdir.mkdir(parents=True, exist_ok=True)
                man = load_manifest(base / "split.csv")
                rows = [["path", "label", "split", "group"]]
                rows += [list(r) for r in zip(man.paths, man.labels, man.splits, man.groups)] + pseudo_rows
                with open(sdir / "manifest.csv", "w", newline="") as fh:
                    csv.writer(fh).writerows(rows)
                shutil.copy(base / "config.yaml", sdir / "config.yaml")
        info = {"teachers": [str(r) for r in runs], "warps": warps, "threshold": threshold,
                "teacher_accuracy": float(np.mean(guess == targets)), "pseudo_labelled": int(len(keep)),
                "test_clips": len(targets), "pseudo_labels_right": int(np.sum(guess[keep] == targets[keep]))}
        write_json_at(fdir / "teacher.json", info)
        save_npz(fdir / "teacher.npz", p=probs, t=targets)  # last: its presence marks the fold as taught
        print(fold, info, flush=True)


def save_npz(path: Path, **arrays) -> None:
    """np.savez through a temporary file and a rename, so a killed process leaves no half-written result."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


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


def mapped(path: str, prefixes: list[tuple[str, str]]) -> str:
    for old, new in prefixes:
        if path.startswith(old):
            return new + path[len(old):]
    return path


def local_manifest(sdir: Path, prefixes: list[tuple[str, str]]) -> Path:
    """The student's manifest with path prefixes rewritten for this machine, and its fold's links re-pointed."""
    if not prefixes:
        return sdir / "manifest.csv"
    with open(sdir.parent / "links.csv", newline="") as fh:
        for link, target in csv.reader(fh):
            link, target = Path(mapped(link, prefixes)), mapped(target, prefixes)
            if os.path.realpath(link) != os.path.realpath(target):  # atomic: several processes may do this
                tmp = link.with_name(f"{link.name}.{os.getpid()}")
                os.symlink(target, tmp)
                os.replace(tmp, link)
    with open(sdir / "manifest.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    out = sdir / "manifest.local.csv"
    with open(out, "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [[mapped(r[0], prefixes)] + r[1:] for r in rows[1:]])
    return out


def train_pending(work: Path, overrides: list[str], prefixes: list[tuple[str, str]], only: str | None = None) -> None:
    """Train each prepared student (whose name holds `only`, if given) that no process has claimed (mkdir is the
    claim); write its test probabilities. A student whose process was killed keeps its claim: remove its `claim`
    folder to train it again."""
    import time

    import specrnn
    from specrnn.experiments.cv import fold_test_probabilities

    speaker_means_for_pseudo_rows()
    for sdir in sorted(p.parent for p in work.glob("*/*/manifest.csv")):
        if only and only not in sdir.name:
            continue
        try:
            (sdir / "claim").mkdir()
        except FileExistsError:
            continue
        t0 = time.perf_counter()
        manifest = local_manifest(sdir, prefixes)
        m = specrnn.train(manifest, out=sdir / "run", config=str(sdir / "config.yaml"), overrides=overrides,
                          overwrite=True, log=None)
        probs, targets = fold_test_probabilities([sdir / "run"], manifest)
        save_npz(sdir / "probs.npz", p=probs, t=targets)
        where = {"overrides": overrides, "seconds": round(time.perf_counter() - t0, 1), "machine": machine(),
                 "test_accuracy": m["test"]["accuracy"]}
        write_json_at(sdir / "trained.json", where)
        print(sdir.parent.name, sdir.name, where["test_accuracy"], where["seconds"], flush=True)


def score(work: Path, name: str, seeds: list[int] | None = None) -> dict:
    """Per fold: the teacher, each student (of `seeds`, default all), the students together, and students and teacher
    at equal weight; also apart on the pseudo-labelled clips (which the students trained on) and on the rest. Means
    over folds only where every fold has the same students."""
    folds = {}
    for fdir in sorted(p for p in work.iterdir() if (p / "teacher.npz").is_file()):
        t = np.load(fdir / "teacher.npz")
        info = json.loads((fdir / "teacher.json").read_text())
        studs = {}
        for f in sorted(fdir.glob("*/probs.npz")):
            if seeds is None or int(f.parent.name.rsplit("-seed", 1)[1]) in seeds:
                z = np.load(f)
                assert np.array_equal(z["t"], t["t"]), f"{f}: other test rows than the teacher's"
                studs[f.parent.name] = z["p"]
        pseudo = t["p"].max(1) >= info["threshold"]
        acc = lambda p, m=slice(None): float(np.mean(p.argmax(-1)[m] == t["t"][m]))  # noqa: E731
        row = {"teacher": acc(t["p"]), "pseudo_labelled": info["pseudo_labelled"],
               "pseudo_labels_right": info["pseudo_labels_right"], "students": {k: acc(p) for k, p in studs.items()},
               "teacher_on_the_rest": acc(t["p"], ~pseudo)}
        if studs:
            together = np.mean(list(studs.values()), 0)
            row["students_together"] = acc(together)
            row["students_together_on_pseudo_labelled"] = acc(together, pseudo)
            row["students_together_on_the_rest"] = acc(together, ~pseudo)
            row["students_and_teacher"] = acc(0.5 * together + 0.5 * t["p"])
        folds[fdir.name] = row
    sets = {tuple(r["students"]) for r in folds.values()}
    res = {"work": str(work), "machine": machine(), "students": sorted(set().union(*sets)),
           "same_students_in_every_fold": len(sets) == 1, "folds": folds}
    if len(sets) == 1:
        for key in ("teacher", "students_together", "students_and_teacher"):
            if all(key in r for r in folds.values()):
                res[f"mean_{key}"] = float(np.mean([r[key] for r in folds.values()]))
        res["mean_student"] = float(np.mean([a for r in folds.values() for a in r["students"].values()] or [np.nan]))
    else:
        print("the folds have different students, so no means:", {f: list(r["students"]) for f, r in folds.items()})
    print(f"{'fold':10} {'pseudo':>11} {'teacher':>8} {'students':>9} {'both':>6} {'rest: t/s':>12}  each student")
    for f, r in folds.items():
        print(f"{f:10} {r['pseudo_labelled']:4} ({r['pseudo_labels_right']:3}) {100 * r['teacher']:8.1f} "
              f"{100 * r.get('students_together', np.nan):9.1f} {100 * r.get('students_and_teacher', np.nan):6.1f} "
              f"{100 * r['teacher_on_the_rest']:5.1f}/{100 * r.get('students_together_on_the_rest', np.nan):5.1f}  "
              + " ".join(f"{100 * a:.1f}" for a in r["students"].values()))
    print({k: round(100 * v, 2) for k, v in res.items() if k.startswith("mean_")})
    write_json(name, res)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("work", type=Path)
    p.add_argument("--teachers", type=Path, nargs="+", required=True, help="CV folders: every run of the fold teaches")
    p.add_argument("--students", type=Path, nargs="+", required=True, help="CV folders whose runs' rows and configs learn")
    p.add_argument("--seeds", default="0", help="the students' seeds (their runs in --students)")
    p.add_argument("--teacher-seeds", default=None, help="only these seeds' runs teach (default: every run)")
    p.add_argument("--warps", default=None, help="teachers' test-time mel warps, e.g. 0.9,1.0,1.1")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--folds", default=None)
    t = sub.add_parser("train")
    t.add_argument("work", type=Path)
    t.add_argument("--set", action="append", default=[], help="config override for the students, e.g. train.threads=1")
    t.add_argument("--map", action="append", default=[], help="OLD=NEW: rewrite a path prefix of the manifests")
    t.add_argument("--only", default=None, help="train only the students whose name holds this text")
    s = sub.add_parser("score")
    s.add_argument("work", type=Path)
    s.add_argument("--name", default="loso_self_training", help="writes benchmarks/out/NAME.json")
    s.add_argument("--seeds", default=None, help="only the students of these seeds, e.g. 0,1 (default: all)")
    a = ap.parse_args()
    a.work = a.work.resolve()  # manifests name the pseudo-label links by absolute path (a relative one would resolve)
    if a.cmd == "prepare":
        prepare(a.work, a.teachers, a.students, [int(x) for x in a.seeds.split(",")],
                [float(w) for w in a.warps.split(",")] if a.warps else None, a.threshold,
                a.folds.split(",") if a.folds else None,
                [int(x) for x in a.teacher_seeds.split(",")] if a.teacher_seeds else None)
    elif a.cmd == "train":
        train_pending(a.work, a.set, [tuple(m.split("=", 1)) for m in a.map], a.only)
    else:
        score(a.work, a.name, [int(x) for x in a.seeds.split(",")] if a.seeds else None)


if __name__ == "__main__":
    main()
