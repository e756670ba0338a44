"""`specrnn train`, and with `--seeds 0,1,2`: train one run per seed on one split and keep the one that validates best.

For models whose training sometimes fails on its initialisation and batch order alone (CTC on small data:
docs/experiments.md), a few seeds and a choice on validation data make a good model the likely outcome. The
choice reads validation only: test data never picks the seed. Each seed's run lives in RUN/seeds/seed-N; the
chosen one's files are copied into RUN, which then is an ordinary run folder (evaluate, predict, export, report).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import Config
from ..errors import Interrupted
from ..files import atomic_write_bytes, write_json
from ..results import TrainResult
from ..tasks import task_of_metrics

SEEDS_DIR = "seeds"
KEPT = ("model.pt", "config.yaml", "split.csv", "history.csv", "bad_files.csv", "learning_curves.png", "confusion_matrix.png")


def selection_key(metrics: dict) -> tuple[float, float]:
    """Lower is better: a CTC run's validation token error rate, else its validation accuracy (negated); ties go to
    the lower validation loss (what early stopping kept)."""
    val = metrics.get("val", {})
    first = task_of_metrics(val).selection_value(val)
    loss = metrics.get("best_val_loss")
    return float(first), float("inf") if loss is None else float(loss)


def train(data=None, out=None, config=None, overrides=None, resume: bool = False, overwrite: bool = False, log=print,
          seeds: list[int] | None = None) -> TrainResult:
    """`specrnn train`: set up (or resume) the run folder, then one run, or with `seeds` one run per seed on one split
    with the best-validated one kept; returns the metrics (also in metrics.json), typed."""
    import time

    from ..jobs import train_single
    from ..runs import open_run

    t_start = time.perf_counter()
    start = open_run(data, out, config, overrides, resume=resume, overwrite=overwrite, seeds=seeds, log=log)
    if start.seeds:
        m = train_seeds(start.data, start.run_dir, start.cfg, start.seeds, resume=start.resume, log=log)
    else:
        m = train_single(start, log, t_start)
    return TrainResult.of(m, start.run_dir)


def train_seeds(data: str, run_dir: Path, cfg: Config, seeds: list[int], resume: bool = False, log=print) -> dict:
    """Train (or resume, or reuse) each seed's run, then copy the best-validated one into `run_dir`; returns its metrics
    with a `seeds` table (each seed's validation and test figures, and which was chosen)."""
    from ..jobs import train_single
    from ..runs import open_run

    def seed_log(msg="", *args, **kwargs):  # each seed's summary, without its "next: evaluate this seed's folder" line
        log("\n".join(line for line in str(msg).split("\n") if not line.startswith("next: ")), *args, **kwargs)

    split_seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
    if resume and (run_dir / "metrics.json").is_file():
        log(f"{run_dir} is complete: every seed has trained; choosing again from their metrics")
    results = {}
    for seed in seeds:
        seed_dir = run_dir / SEEDS_DIR / f"seed-{seed}"
        log(f"seed {seed} ({seeds.index(seed) + 1} of {len(seeds)}) -> {seed_dir}")
        try:
            if (seed_dir / "metrics.json").is_file():
                results[seed] = json.loads((seed_dir / "metrics.json").read_text(encoding="utf-8"))
                log(f"seed {seed}: already trained")
            elif resume and (seed_dir / "run.json").is_file():
                results[seed] = train_single(open_run(out=seed_dir, resume=True, log=seed_log), seed_log)
            else:
                start = open_run(data, seed_dir, cfg, {"seed": seed, "data.split_seed": split_seed}, overwrite=True,
                                 log=seed_log)
                results[seed] = train_single(start, seed_log)
        except Interrupted:
            raise Interrupted(f"training interrupted; resume with: specrnn train --resume --out {run_dir}") from None
    best = min(seeds, key=lambda s: selection_key(results[s]))
    table = [{"seed": s, "val": _figures(results[s].get("val", {})), "test": _figures(results[s].get("test", {})),
              "best_val_loss": results[s].get("best_val_loss"), "chosen": s == best} for s in seeds]
    for name in KEPT:
        src = run_dir / SEEDS_DIR / f"seed-{best}" / name
        if src.is_file():
            atomic_write_bytes(run_dir / name, src.read_bytes())
    metrics = {**results[best], "seeds": {"chosen": best, "by": _criterion(results[best]), "split_seed": split_seed,
                                          "runs": table}}
    write_json(run_dir / "metrics.json", metrics)  # last: its presence says the selection is complete
    log(summary_table(metrics["seeds"]))
    log(f"run folder: {run_dir} (seed {best}'s model; every seed's run in {run_dir / SEEDS_DIR})\n"
        f"next: specrnn evaluate {run_dir}   |   specrnn predict {run_dir} FILE.wav")
    return metrics


def _figures(split_metrics: dict) -> dict:
    keys = ("accuracy", "macro_f1", "token_error_rate", "n")
    return {k: split_metrics[k] for k in keys if k in split_metrics}


def _criterion(metrics: dict) -> str:
    val = metrics.get("val", {})
    return task_of_metrics(val).criterion if task_of_metrics(val).headline[0] in val else "validation loss"


def summary_table(sel: dict) -> str:
    """One line per seed: its validation and test figures; the chosen one marked."""
    key, name = task_of_metrics(sel["runs"][0]["val"]).headline
    n_val = sel["runs"][0]["val"].get("n", "?")
    heads = [f"val {name}", f"test {name}"]
    lines = [f"seeds on one split (drawn with split seed {sel['split_seed']}; {n_val} validation clips), chosen by "
             f"{sel['by']}, ties by validation loss; test figures shown, never used to choose:",
             f"  {'seed':>6}   {heads[0]:>22}   {heads[1]:>22}"]
    for r in sel["runs"]:
        val, test = r["val"].get(key), r["test"].get(key)
        fmt = lambda x: f"{100 * x:.2f}%" if x is not None else "-"  # noqa: E731
        lines.append(f"  {r['seed']:>6}   {fmt(val):>22}   {fmt(test):>22}{'   <- chosen' if r['chosen'] else ''}")
    return "\n".join(lines)
