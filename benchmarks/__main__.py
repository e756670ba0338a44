"""Run every benchmark suite, one at a time (each in a fresh process), then regenerate the Markdown results.

python -m benchmarks                      # everything (the accuracy suite alone takes tens of minutes)
python -m benchmarks --quick              # a subset in under 10 minutes: writes benchmarks/out/quick/RESULTS-quick.md
python -m benchmarks --only accuracy      # some suites; RESULTS.md is rebuilt from every suite's latest JSON
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

SUITES = ["features_speed", "training_speed", "efficiency", "time_to_accuracy", "inference_speed", "startup", "serve", "defaults", "nonspeech", "scale", "recognition", "accuracy"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true", help="a subset: fewer repeats, epochs and files (smoke-test figures)")
    ap.add_argument("--only", help=f"comma-separated suites ({','.join(SUITES)})")
    ap.add_argument("--skip", default="", help="comma-separated suites to leave out")
    a = ap.parse_args(argv)
    chosen = a.only.split(",") if a.only else SUITES
    unknown = sorted(set(chosen + [s for s in a.skip.split(",") if s]) - set(SUITES))
    if unknown:
        ap.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    failed = []
    t0 = time.perf_counter()
    for suite in [s for s in SUITES if s in chosen and s not in a.skip.split(",")]:
        print(f"== {suite} ({time.perf_counter() - t0:.0f} s elapsed)", flush=True)
        r = subprocess.run([sys.executable, "-m", f"benchmarks.{suite}", *(["--quick"] if a.quick else [])])
        if r.returncode:
            failed.append(suite)
    from .report import write

    print(f"wrote {write(a.quick)} after {time.perf_counter() - t0:.0f} s")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
