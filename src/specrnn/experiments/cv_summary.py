"""What cross-validation reports: each run's test probabilities, seed ensembles, the mean and spread over folds
(classification or token sequences), the per-fold tables and the console summary."""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from ..data.manifest import load_manifest
from ..errors import SpecrnnError
from ..files import atomic_write_text


def read_metrics(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "metrics.json").read_text())


def fold_test_probabilities(run_dirs: list[Path], fold_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """The runs' class probabilities on the fold's test rows, averaged, and the rows' targets. Runs that share
    feature settings (the seeds of one config) share one reading of the audio."""
    from ..data.dataset import model_input_set
    from ..inference import Predictor

    predictors = [Predictor.load(d, device="cpu") for d in run_dirs]
    classes = predictors[0].classes
    if any(p.classes != classes for p in predictors):
        raise SpecrnnError(f"{fold_csv}: the runs to average were trained on different classes")
    fold, sets, total = load_manifest(fold_csv), {}, 0
    for p in predictors:
        key = repr((p.cfg.features, p.cfg.model.normalize == "group"))
        if key not in sets:
            sets[key] = model_input_set(fold, p.cfg, classes, "test", "ensemble")
        total = total + p.probabilities(p.logits_from_features(sets[key].features))
    targets = next(iter(sets.values())).targets
    if any(len(fs.targets) != len(targets) for fs in sets.values()):
        raise SpecrnnError(f"{fold_csv}: some test files could not be read with every run's feature settings")
    return total / len(predictors), targets


def seed_ensemble(run_dirs: list[Path], fold_csv: Path) -> dict | None:
    """Metrics of the seeds' averaged class probabilities on the fold's test rows: what training several seeds buys
    when they are used together. None for a single seed or a multi-label task."""
    if len(run_dirs) < 2:
        return None
    from ..evaluation import classification_metrics
    from ..inference import Predictor

    first = Predictor.load(run_dirs[0], device="cpu")
    if first.task.multilabel:
        return None
    probs, targets = fold_test_probabilities(run_dirs, fold_csv)
    return classification_metrics(targets, probs.argmax(-1), first.classes)


def summarize(runs, fold_names: list[str], protocol: str) -> dict:
    """Per-fold means over seeds, mean and std over folds, and the confusion matrix pooled over every run."""
    if "token_error_rate" in read_metrics(runs[0][3])["test"]:
        return summarize_sequences(runs, fold_names, protocol)
    per_fold = []
    classes: list[str] = []
    for fold in fold_names:
        for r in runs:
            if r[0] == fold:
                classes = sorted(set(classes) | set(read_metrics(r[3])["classes"]))
    pooled = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for fold in fold_names:
        ms = [read_metrics(r[3]) for r in runs if r[0] == fold]
        accs = [m["test"]["accuracy"] for m in ms]
        f1s = [m["test"]["macro_f1"] for m in ms]
        for m in ms:
            idx = [classes.index(c) for c in m["classes"]]
            cm = np.asarray(m["test"].get("confusion_matrix", []))
            if cm.size:
                pooled[np.ix_(idx, idx)] += cm
        per_fold.append({"fold": fold, "n": ms[0]["test"]["n"], "accuracy": statistics.mean(accs), "macro_f1": statistics.mean(f1s),
                         "accuracy_per_seed": accs, "train_seconds": statistics.mean(m["train_seconds"] for m in ms),
                         "epochs": statistics.mean(m["epochs_run"] for m in ms)})
        ens = seed_ensemble([r[3] for r in runs if r[0] == fold], next(r[2] for r in runs if r[0] == fold))
        if ens is not None:
            per_fold[-1].update(ensemble_accuracy=ens["accuracy"], ensemble_macro_f1=ens["macro_f1"])
    accs = [f["accuracy"] for f in per_fold]
    f1s = [f["macro_f1"] for f in per_fold]
    all_runs = [a for f in per_fold for a in f["accuracy_per_seed"]]
    return {
        "protocol": protocol, "folds": per_fold, "n_runs": len(runs), "seeds": sorted({r[1] for r in runs}),
        "accuracy_mean": statistics.mean(accs), "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "macro_f1_mean": statistics.mean(f1s), "macro_f1_std": statistics.stdev(f1s) if len(f1s) > 1 else 0.0,
        "accuracy_std_over_runs": statistics.stdev(all_runs) if len(all_runs) > 1 else 0.0,
        "classes": classes, "pooled_confusion_matrix": pooled.tolist(),
        "pooled_accuracy": float(np.trace(pooled) / max(pooled.sum(), 1)),
        **({"ensemble_accuracy_mean": statistics.mean(f["ensemble_accuracy"] for f in per_fold),
            "ensemble_macro_f1_mean": statistics.mean(f["ensemble_macro_f1"] for f in per_fold)}
           if all("ensemble_accuracy" in f for f in per_fold) else {}),
    }


def summarize_sequences(runs, fold_names: list[str], protocol: str) -> dict:
    """CTC runs: per fold the token error rate and sequences right (means over seeds); mean and std over folds,
    and the pooled token error rate (every run's edits over every run's reference tokens)."""
    per_fold, edits, tokens = [], 0.0, 0
    for fold in fold_names:
        ms = [read_metrics(r[3]) for r in runs if r[0] == fold]
        tests = [m["test"] for m in ms]
        edits += sum(t["token_error_rate"] * t["tokens"] for t in tests)
        tokens += sum(t["tokens"] for t in tests)
        ters = [t["token_error_rate"] for t in tests]
        per_fold.append({"fold": fold, "n": tests[0]["n"], "tokens": tests[0]["tokens"],
                         "token_error_rate": statistics.mean(ters), "token_error_rate_per_seed": ters,
                         "accuracy": statistics.mean(t["accuracy"] for t in tests),
                         "train_seconds": statistics.mean(m["train_seconds"] for m in ms),
                         "epochs": statistics.mean(m["epochs_run"] for m in ms)})
    ters, accs = [f["token_error_rate"] for f in per_fold], [f["accuracy"] for f in per_fold]
    return {"protocol": protocol, "task": "sequence", "folds": per_fold, "n_runs": len(runs),
            "seeds": sorted({r[1] for r in runs}), "classes": read_metrics(runs[0][3])["classes"],
            "token_error_rate_mean": statistics.mean(ters), "token_error_rate_std": statistics.stdev(ters) if len(ters) > 1 else 0.0,
            "pooled_token_error_rate": edits / max(tokens, 1),
            "accuracy_mean": statistics.mean(accs), "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0}


def write_tables(out: Path, s: dict) -> None:
    from .. import plots

    if s.get("task") == "sequence":
        lines = ["fold,n,tokens,token_error_rate,sequences_right,train_seconds,epochs"]
        lines += [f"{f['fold']},{f['n']},{f['tokens']},{f['token_error_rate']:.6f},{f['accuracy']:.6f},"
                  f"{f['train_seconds']:.1f},{f['epochs']:.1f}" for f in s["folds"]]
        atomic_write_text(out / "folds.csv", "\n".join(lines) + "\n")
        return
    lines = ["fold,n,accuracy,macro_f1,train_seconds,epochs,seed_ensemble_accuracy"]
    lines += [f"{f['fold']},{f['n']},{f['accuracy']:.6f},{f['macro_f1']:.6f},{f['train_seconds']:.1f},{f['epochs']:.1f},"
              + (f"{f['ensemble_accuracy']:.6f}" if "ensemble_accuracy" in f else "") for f in s["folds"]]
    atomic_write_text(out / "folds.csv", "\n".join(lines) + "\n")
    plots.confusion_matrix(np.asarray(s["pooled_confusion_matrix"]), s["classes"], out / "confusion_matrix.png",
                           f"pooled confusion matrix ({len(s['folds'])} folds)")


def format_summary(s: dict, out: Path) -> str:
    lines = ["", "=" * 64, f"cross-validation ({s['protocol']}), {len(s['folds'])} folds, {s['n_runs']} runs"]
    width = max(len(str(f["fold"])) for f in s["folds"])  # fold names line up without padding short ones far out
    if s.get("task") == "sequence":
        for f in s["folds"]:
            seeds = ", ".join(f"{100 * a:.2f}" for a in f["token_error_rate_per_seed"])
            lines.append(f"  fold {f['fold']:>{width}}: token error rate {100 * f['token_error_rate']:6.2f}%  "
                         f"(n={f['n']}, {f['tokens']} tokens; seeds: {seeds})")
        lines += [f"mean token error rate {100 * s['token_error_rate_mean']:.2f}% ± {100 * s['token_error_rate_std']:.2f} "
                  f"(std over folds); pooled {100 * s['pooled_token_error_rate']:.2f}%; sequences right "
                  f"{100 * s['accuracy_mean']:.2f}%", f"CV folder: {out}  (cv.json, folds.csv, fold-*/seed-*/)", "=" * 64]
        return "\n".join(lines)
    for f in s["folds"]:
        seeds = ", ".join(f"{100 * a:.2f}" for a in f["accuracy_per_seed"])
        ens = f"; seeds together: {100 * f['ensemble_accuracy']:.2f}" if "ensemble_accuracy" in f else ""
        lines.append(f"  fold {f['fold']:>{width}}: {100 * f['accuracy']:6.2f}%  (n={f['n']}; seeds: {seeds}{ens})")
    lines += [f"mean accuracy {100 * s['accuracy_mean']:.2f}% ± {100 * s['accuracy_std']:.2f} (std over folds); "
              f"macro-F1 {100 * s['macro_f1_mean']:.2f}%",
              *([f"the seeds together (averaged probabilities): mean accuracy {100 * s['ensemble_accuracy_mean']:.2f}%"]
                if "ensemble_accuracy_mean" in s else []),
              f"CV folder: {out}  (cv.json, folds.csv, confusion_matrix.png, fold-*/seed-*/)", "=" * 64]
    return "\n".join(lines)
