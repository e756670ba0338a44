"""Start-up cost for command-line users: wall time of `specrnn predict --help` and of predicting one file, each a
fresh process, median of several; against the floor of `python -c pass` and `python -c "import torch"`.
python -m benchmarks.startup [--quick]
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from .common import OUT, figure, finish, load_str, one_second_clips, quick_flag, random_run, start, table, timed


def wall(cmd: list[str], repeats: int) -> list[float]:
    """Seconds of each run of cmd (one untimed run first, so the files are in the page cache)."""
    env = dict(os.environ)
    return timed(lambda: subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True), repeats)


def main(argv=None) -> dict:
    quick = quick_flag(argv)
    n = 3 if quick else 7
    res = start("startup", quick)
    run = random_run(None, OUT / "runs" / "bench-default")
    clip = str(one_second_clips(1)[0])
    py = sys.executable
    exe = str(Path(py).parent / "specrnn")
    cmds = {"python -c pass": [py, "-c", "pass"], "python -c 'import torch'": [py, "-c", "import torch"],
            "specrnn predict --help": [exe, "predict", "--help"], "specrnn predict RUN clip.wav": [exe, "predict", str(run), clip],
            "python -c 'import lightning'": [py, "-c", "import lightning"]}
    t = {k: statistics.median(wall(c, n)) for k, c in cmds.items()}
    res["figures"].append(figure("start-up: specrnn predict --help", t["specrnn predict --help"], "s", "python -c pass",
                                 t["python -c pass"], better="lower", note="argument parsing only; torch is not imported"))
    res["figures"].append(figure("start-up: specrnn predict RUN one-file", t["specrnn predict RUN clip.wav"], "s",
                                 "python -c 'import torch'", t["python -c 'import torch'"], better="lower",
                                 note="default model, one 1-second WAV; no Lightning import"))
    res["tables"].append(table(f"Fresh-process wall time (median of {n})", ["command", "seconds"],
                               [[k, f"{v:.2f}"] for k, v in t.items()]))
    res["notes"].append(f"Load: {load_str()}.")
    print(finish(res, quick))
    return res


if __name__ == "__main__":
    main()
