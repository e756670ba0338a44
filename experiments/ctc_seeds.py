"""Which CTC settings learn yesno on every seed: train a config variant on several seeds (two runs at a time,
one thread each) and print each seed's test word error. Research script (docs/experiments.md, yesno section).

    python -m experiments.ctc_seeds OUT --seeds 4,5,6 --set train.lr=0.01 [--set ...] [--config none]

`--config none` trains with the recipe's defaults for token sequences (no config file), as `specrnn train DATA` does.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
YESNO = ROOT.parent / "shared" / "data" / "yesno" / "labels.csv"


def one(out: Path, seed: int, sets: list[str], config: str) -> dict:
    run = out / f"seed-{seed}"
    cmd = [sys.executable, "-m", "specrnn", "train", str(YESNO), "--out", str(run), "--overwrite",
           *([] if config == "none" else ["--config", config]), "--set", f"seed={seed}", "--set", "train.threads=1"]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return {"seed": seed, "error": r.stderr[-500:]}
    m = json.loads((run / "metrics.json").read_text())
    return {"seed": seed, "test_wer": m["test"]["token_error_rate"], "val_wer": m["val"]["token_error_rate"],
            "epochs": m["epochs_run"], "seconds": m["train_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--config", default=str(ROOT / "configs" / "yesno-ctc.yaml"), help="a config file, or none: the recipe")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda s: one(a.out, s, a.set, a.config), seeds))
    for r in rows:
        print(json.dumps(r), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps({"config": a.config, "sets": a.set, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
