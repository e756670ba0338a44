"""How often `specrnn train --seeds` keeps a failed run: from one `--seeds` run over many seeds, every subset of k of
them is replayed with the tool's own choice (specrnn.experiments.seeds.selection_key, validation only), and the chosen seed's
test figure is recorded.

python -m experiments.seeds_choice RUN_DIR|METRICS_JSON ... [--fail 0.2] [--out benchmarks/out/seeds_choice.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

from specrnn.experiments.seeds import selection_key

from benchmarks.common import OUT


def replay(run: Path, fail: float) -> dict:
    """`run`: a `--seeds` run folder, or its metrics.json (the table of every seed's validation and test figures)."""
    metrics = json.loads((run / "metrics.json" if run.is_dir() else run).read_text())
    runs = {r["seed"]: r for r in metrics["seeds"]["runs"]}  # each row: val, test, best_val_loss, as selection_key reads
    ctc = "token_error_rate" in next(iter(runs.values()))["test"]

    def test_error(m: dict) -> float:
        return m["test"]["token_error_rate"] if ctc else 1 - m["test"]["accuracy"]

    out = {"run": str(run), "hardware": metrics.get("hardware"), "seeds": sorted(runs),
           "test_error_per_seed": {s: round(test_error(m), 4) for s, m in runs.items()},
           "fail_threshold": fail, "single_runs_failing": sum(test_error(m) > fail for m in runs.values())}
    for k in range(1, min(5, len(runs)) + 1):
        chosen = [min(sub, key=lambda s: selection_key(runs[s])) for sub in itertools.combinations(sorted(runs), k)]
        errors = [test_error(runs[s]) for s in chosen]
        out[f"k={k}"] = {"subsets": len(chosen), "failed": sum(e > fail for e in errors),
                         "failed_share": round(sum(e > fail for e in errors) / len(chosen), 4),
                         "mean_test_error": round(statistics.mean(errors), 4), "median_test_error": round(statistics.median(errors), 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--fail", type=float, default=0.2, help="a test error above this counts as a failed run")
    ap.add_argument("--out", type=Path, default=OUT / "seeds_choice.json")
    a = ap.parse_args()
    result = [replay(r, a.fail) for r in a.runs]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    for r in result:
        print(r["run"], r["hardware"], f"single runs failing: {r['single_runs_failing']} of {len(r['seeds'])}")
        for k in range(1, 6):
            if f"k={k}" in r:
                x = r[f"k={k}"]
                print(f"  best of {k}: {x['failed']} of {x['subsets']} choices fail ({100 * x['failed_share']:.1f}%), "
                      f"mean test error {100 * x['mean_test_error']:.2f}%, median {100 * x['median_test_error']:.2f}%")


if __name__ == "__main__":
    main()
