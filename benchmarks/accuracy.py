"""Accuracy on real data: FSDD digits (standard split, 3 seeds), FSDD speaker-independent (leave one speaker out, 5 seeds;
per clip and per-speaker normalisation),
unseen-speaker accuracy against the number of training speakers (1-4, seed 0; 5 read from the loso task),
FSDD speaker identification, ESC-10 (official 5-fold CV). Every row: accuracy, macro-F1, training time, epochs,
parameters, config. --quick is a smoke test (1 seed, 1-2 epochs, subsets), not a result.
python -m benchmarks.accuracy [--quick] [--tasks digits,loso,loso_group,loso_synth,loso_donors,loso_accents,speakers,speaker,esc10] [--resume]
loso_synth, loso_donors and loso_accents (not run by default: they need the espeak-ng, or flite and festival,
programs, and one to two hours each) add synthetic voices (experiments.synth_speakers) to every fold's training part.
--resume keeps finished runs in benchmarks/out/runs/acc-* (a CV folder resumes at its first unfinished run).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from .common import ESC10, OUT, QUICK_OUT, ROOT, figure, finish, fsdd_groups_manifest, fsdd_manifest, load_str, mean_std, start, table

TASKS = ["digits", "loso", "loso_group", "loso_synth", "loso_donors", "loso_accents", "speakers", "speaker", "esc10"]
SYNTH_TASKS = {"loso_synth": ("espeak", 96), "loso_donors": ("donors", 48), "loso_accents": ("accents", 48)}  # engine, voices (experiments.synth_speakers)
RUN_NAMES = {"digits": "acc-fsdd-digits-s*", "loso": "acc-fsdd-loso", "loso_group": "acc-fsdd-loso-group",
             "loso_synth": "acc-fsdd-loso-synth", "loso_donors": "acc-fsdd-loso-donors",
             "loso_accents": "acc-fsdd-loso-accents",
             "speakers": "acc-speakers-k*", "speaker": "acc-fsdd-speaker-s*", "esc10": "acc-esc10"}  # under RUNS
FSDD_SPEAKERS = ["theo", "lucas", "george", "jackson", "nicolas", "yweweler"]
# k training speakers: subsets of k + 1 speakers, run leave-one-speaker-out, chosen so that every speaker is
# tested equally often at each k (indices into FSDD_SPEAKERS)
SPEAKER_SUBSETS = {1: [[0, 1], [2, 3], [4, 5]], 2: [[0, 1, 2], [3, 4, 5], [0, 3, 4], [1, 2, 5]],
                   3: [[0, 1, 2, 3], [4, 5, 0, 1], [2, 3, 4, 5]], 4: [[j for j in range(6) if j != i] for i in range(6)]}
ESC10_REFERENCES = "published on this protocol: MFCC random forest 72.7%, Piczak's 2015 CNN 80.3%, human listeners 95.7%"


def _subset(csv: Path, keep, name: str, folder: Path = OUT / "quick") -> Path:
    """A CSV with the rows of `csv` for which keep(row) is true (quick mode, speaker subsets)."""
    import csv as _csv

    with open(csv) as f:
        rows = list(_csv.DictReader(f))
    out = folder / name
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = _csv.DictWriter(f, rows[0].keys())
        w.writeheader()
        w.writerows(r for r in rows if keep(r))
    return out


def _row(task: str, runs: list[dict], config: str, protocol: str) -> list:
    acc, acc_sd = mean_std([100 * m["test"]["accuracy"] for m in runs])
    f1, f1_sd = mean_std([100 * m["test"]["macro_f1"] for m in runs])
    t, _ = mean_std([m["train_seconds"] for m in runs])
    ep, _ = mean_std([m["epochs_run"] for m in runs])
    return [task, protocol, f"{acc:.2f}% ± {acc_sd:.2f}", f"{f1:.2f}% ± {f1_sd:.2f}", f"{t:.0f}", f"{ep:.0f}",
            f"{runs[0]['parameters']:,}", config]


RESUME = False
RUNS = OUT / "runs"  # quick runs go elsewhere (main sets it), so a smoke test never replaces a full run's folders


def _train(csv: Path, name: str, seeds: list[int], sets: list[str], config: str | None = None) -> list[dict]:
    import specrnn

    out = []
    for seed in seeds:
        run = RUNS / f"acc-{name}-s{seed}"
        if RESUME and (run / "metrics.json").is_file():
            out.append(json.loads((run / "metrics.json").read_text()))
            print(f"{name} seed {seed}: finished run kept ({run})", flush=True)
            continue
        shutil.rmtree(run, ignore_errors=True)
        m = specrnn.train(csv, out=run, config=config, overrides=[f"seed={seed}", *sets], log=lambda *a: None)
        out.append(m)
        print(f"{name} seed {seed}: test accuracy {100 * m['test']['accuracy']:.2f}%", flush=True)
    return out


def _cv(csv: Path, name: str, sets: list[str], config=None, **kw) -> tuple[dict, list[dict]]:
    import specrnn

    out = RUNS / f"acc-{name}"
    if not RESUME:
        shutil.rmtree(out, ignore_errors=True)  # a CV folder resumes: start clean so no stale run is reused
    s = specrnn.cv(csv, out, config=config, overrides=sets, log=lambda *a: None, **kw)
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("fold-*/seed-*/metrics.json"))]
    return s, runs


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tasks", default=",".join(t for t in TASKS if t not in SYNTH_TASKS))
    ap.add_argument("--resume", action="store_true", help="keep finished runs instead of training them again")
    a = ap.parse_args(argv)
    global RESUME, RUNS
    RESUME = a.resume
    RUNS = (QUICK_OUT if a.quick else OUT) / "runs"
    q, tasks = a.quick, a.tasks.split(",")
    res = start("accuracy", q)
    quick_sets = ["train.max_epochs=2"] if q else []
    rows, fold_rows = [], []
    if "digits" in tasks:
        seeds = [0] if q else [0, 1, 2]
        runs = _train(fsdd_manifest("digit"), "fsdd-digits", seeds, quick_sets)
        rows.append(_row("FSDD digits", runs, "default (preset gru)", f"standard split (takes 0-4 test), seeds {seeds}"))
        accs = [m["test"]["accuracy"] for m in runs]
        res["figures"].append(figure("FSDD digits, standard split: test accuracy (mean of seeds)", statistics.mean(accs), "fraction",
                                     note=f"std {mean_std(accs)[1]:.4f} over seeds {seeds}"))
    for task, config, label in (("loso", si_config_path(), "FSDD digits, unseen speaker"),
                                ("loso_group", _config("fsdd-speaker-norm.yaml"),
                                 "FSDD digits, unseen speaker, per-speaker normalisation")):
        if task in tasks:
            _loso(res, rows, fold_rows, q, quick_sets, task, config, label)
    for task, (engine, voices) in SYNTH_TASKS.items():
        if task not in tasks:
            continue
        from experiments.synth_speakers import TAKES, programs_missing, synthesise

        if programs_missing(engine):
            print(f"{task} skipped: {programs_missing(engine)}")
            continue
        voices, takes = (4, 1) if q else (voices, TAKES)
        extra = synthesise((QUICK_OUT if q else OUT) / f"synth-{engine}-{voices}x{takes}", voices, takes, engine=engine)
        _loso(res, rows, fold_rows, q, quick_sets, task, _config("fsdd-speaker-norm.yaml"),
              f"FSDD digits, unseen speaker, per-speaker normalisation + {voices} synthetic voices ({engine})", extra)
    if "speakers" in tasks and not q:
        _speaker_count(res, si_config_path())
    if "speaker" in tasks:
        runs = _train(fsdd_manifest("speaker"), "fsdd-speaker", [0], quick_sets, config="bilstm")
        rows.append(_row("FSDD speaker identification", runs, "preset bilstm", "standard split, seed 0"))
    if "esc10" in tasks:
        labels = ESC10 / "labels.csv"
        cfg_file = ROOT / "configs" / "esc10.yaml"
        config = str(cfg_file) if cfg_file.is_file() else None
        if q:  # folds 1-3 only (validation carving needs 10 training clips per class): a 3-fold smoke test
            labels = _subset(labels, lambda r: r["fold"] in ("1", "2", "3"), "esc10_folds123.csv")
            labels = _absolute(labels, ESC10)
        s, runs = _cv(labels, "esc10", ["train.max_epochs=1"] if q else [], config=config, fold_column="fold",
                      group_column="freesound_id")
        name = "configs/esc10.yaml" if config else "default"
        rows.append(_row("ESC-10", runs, name, f"official folds ({len(s['folds'])}), train on the others"))
        fold_rows += [["ESC-10", f["fold"], f["n"], f"{100 * f['accuracy']:.2f}%", f"{100 * f['macro_f1']:.2f}%"] for f in s["folds"]]
        res["figures"].append(figure("ESC-10, official folds: mean accuracy", s["accuracy_mean"], "fraction",
                                     note=f"std over folds {s['accuracy_std']:.4f}; {ESC10_REFERENCES}"))
    res["tables"].append(table("Accuracy on real data (test labels never used for training, early stopping or statistics; per-speaker normalisation takes the held-out speaker's mean from its unlabelled clips)",
                               ["task", "protocol", "accuracy", "macro-F1", "training s per run", "epochs", "parameters", "config"],
                               rows, note=("QUICK SMOKE TEST (1-2 epochs, subsets): not a result. " if q else "") +
                               "± is the standard deviation over every run (folds x seeds); the figures above give "
                               f"it over folds. ESC-10 {ESC10_REFERENCES}."))
    if fold_rows:
        res["tables"].append(table("Per fold (test speaker or official fold)", ["protocol", "fold", "clips", "accuracy", "macro-F1"],
                                   fold_rows))
    res["notes"].append(f"specrnn.cv runs folds in parallel processes (its default for this machine). Load: {load_str()}.")
    res["notes"].append(_trained_when(RUNS, tasks))
    print(finish(res, q))
    return res


def _loso(res: dict, rows: list, fold_rows: list, q: bool, quick_sets: list[str], task: str, config: str | None,
          label: str, extra: Path | None = None) -> None:
    """FSDD leave one speaker out with `config`, 5 seeds (quick: 3 speakers, 1 seed): a row, per-fold rows, figures.
    `extra`: a manifest of training-only rows (cv --train-extra)."""
    csv = fsdd_groups_manifest()
    if q:  # three speakers (validation needs two in training), takes 0-19: three small folds
        csv = _subset(csv, lambda r: r["group"] in ("george", "jackson", "lucas") and int(r["take"]) < 20,
                      "fsdd_loso_3speakers.csv")
    seeds = [0] if q else [0, 1, 2, 3, 4]
    s, runs = _cv(csv, RUN_NAMES[task].removeprefix("acc-"), quick_sets, config=config, leave_one_group_out=True, seeds=seeds,
                   train_extra=extra)
    name = f"configs/{Path(config).name}" if config else "default"
    rows.append(_row(label, runs, name, f"leave one speaker out, {len(s['folds'])} folds x seeds {seeds}"))
    fold_rows += [[f"{label} ({name})", f["fold"], f["n"], f"{100 * f['accuracy']:.2f}%", f"{100 * f['macro_f1']:.2f}%"]
                  for f in s["folds"]]
    res["figures"].append(figure(f"{label}: mean accuracy over folds", s["accuracy_mean"], "fraction",
                                 note=f"std over folds {s['accuracy_std']:.4f}; mean over seeds {seeds}; {name}",
                                 target=">= 95%", met=s["accuracy_mean"] >= 0.95))
    if "ensemble_accuracy_mean" in s:
        res["figures"].append(figure(f"{label}: the seeds together (averaged probabilities)", s["ensemble_accuracy_mean"],
                                     "fraction", target=">= 95%", met=s["ensemble_accuracy_mean"] >= 0.95))


def _config(name: str) -> str | None:
    path = ROOT / "configs" / name
    return str(path) if path.is_file() else None


def si_config_path() -> str | None:
    return _config("fsdd-speaker-independent.yaml")


def _speaker_count(res: dict, config: str | None) -> None:
    """Unseen-speaker accuracy of the LOSO config (seed 0) trained on k = 1..4 speakers; k = 5 is the loso task's
    seed 0 (read from its folder). Fits: accuracy linear in log2(k), and the error rate as a power law of k."""
    import math

    manifest = fsdd_groups_manifest()
    acc: dict[int, dict[str, list[float]]] = {}
    for k, subsets in SPEAKER_SUBSETS.items():
        for i, subset in enumerate(subsets):
            keep = {FSDD_SPEAKERS[j] for j in subset}
            name = f"speakers-k{k}{'abcdef'[i]}"
            csv = _subset(manifest, lambda r: r["group"] in keep, f"fsdd_{name}.csv", OUT)
            s, _ = _cv(csv, name, [], config=config, leave_one_group_out=True, seeds=[0])
            for fold in s["folds"]:
                acc.setdefault(k, {}).setdefault(fold["fold"], []).append(fold["accuracy"])
    loso = RUNS / "acc-fsdd-loso" / "cv.json"
    if loso.is_file():
        acc[5] = {f["fold"]: [f.get("accuracy_per_seed", [f["accuracy"]])[0]] for f in json.loads(loso.read_text())["folds"]}
    out_rows, ks, means = [], [], []
    for k in sorted(acc):
        values = [a for v in acc[k].values() for a in v]
        ks.append(k)
        means.append(100 * statistics.mean(values))
        out_rows.append([k, len(values), *[f"{100 * statistics.mean(acc[k][n]):.1f}" if n in acc[k] else "" for n in FSDD_SPEAKERS],
                         f"{means[-1]:.2f}%"])
    res["tables"].append(table("FSDD unseen speaker against the number of training speakers (seed 0)",
                               ["training speakers", "folds", *FSDD_SPEAKERS, "mean"], out_rows,
                               note="Speaker columns: mean over the folds that test that speaker."
                                    + (" k = 5 is the loso task's seed 0." if 5 in acc else "")))
    if len(ks) >= 2:
        def fit(x, y):  # least squares y = a + b x
            mx, my = statistics.mean(x), statistics.mean(y)
            b = sum((u - mx) * (v - my) for u, v in zip(x, y)) / sum((u - mx) ** 2 for u in x)
            return my - b * mx, b
        a, b = fit([math.log2(k) for k in ks], means)
        a2, b2 = fit([math.log(k) for k in ks], [math.log(100 - m) for m in means])
        res["figures"].append(figure("FSDD unseen speaker: points of accuracy per doubling of the training speakers", b,
                                     "points", note=f"fit {a:.1f} + {b:.2f} log2(k) over k = {ks}"))
        res["figures"].append(figure("FSDD unseen speaker: training speakers for 95%, accuracy linear in log2(k)",
                                     2 ** ((95 - a) / b), "speakers", note="an extrapolation"))
        res["figures"].append(figure("FSDD unseen speaker: training speakers for 95%, error rate a power law of k",
                                     math.exp((math.log(5) - a2) / b2), "speakers",
                                     note=f"fit error {math.exp(a2):.1f}% x k^{b2:.2f}; an extrapolation"))


def _trained_when(runs: Path, tasks: list[str]) -> str:
    """When each task's runs finished (metrics.json times): with --resume, rows can come from earlier runs, whose
    training times reflect the load of their own day and hour, not this section's."""
    import time

    parts = []
    for task in tasks:
        stamps = [p.stat().st_mtime for d in runs.glob(RUN_NAMES.get(task, "-")) for p in d.rglob("metrics.json")]
        if stamps:
            fmt = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))  # noqa: E731
            parts.append(f"{task} {fmt(min(stamps))}" + (f" to {fmt(max(stamps))}" if fmt(max(stamps)) != fmt(min(stamps)) else ""))
    return "Runs finished: " + "; ".join(parts) + "."


def _absolute(csv: Path, root: Path) -> Path:
    """Rewrite relative paths of a subset CSV against the data folder (the subset lives elsewhere)."""
    import csv as _csv

    with open(csv) as f:
        rows = list(_csv.DictReader(f))
    for r in rows:
        r["path"] = str((root / r["path"]).resolve())
    with open(csv, "w", newline="") as f:
        w = _csv.DictWriter(f, rows[0].keys())
        w.writeheader()
        w.writerows(rows)
    return csv


if __name__ == "__main__":
    main()
