"""Experiment (not a feature): synthetic speakers for FSDD's digits, spoken by espeak-ng.

Five training voices are what limits FSDD's unseen-speaker accuracy (docs/experiments.md, the speaker-count study).
This renders the ten digit words with espeak-ng's formant synthesiser in many synthetic voices, each an English
accent (American, British, Scottish, Caribbean...) and a voice variant (formants, breathiness), with its own base
pitch and rate; each take jitters pitch, rate and loudness. It writes a manifest (`path,label,group`, one group per
synthetic voice) for `specrnn cv --train-extra`, which adds its rows to every fold's training part, never to
validation or test.

Needs the espeak-ng program (Debian: apt-get install espeak-ng); not a dependency of specrnn.

python -m benchmarks.synth_speakers --out DIR [--speakers 96] [--takes 4] [--seed 1]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
# espeak-ng's male voice variants (FSDD's six speakers are men) and a few neutral ones
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "klatt", "klatt2", "klatt3", "klatt4", "adam",
            "benjamin", "david", "edward", "john", "max", "michel", "norbert", "paul", "Mike", "Andy", "Denis"]


def voices(n: int, rng: np.random.Generator) -> list[dict]:
    """`n` distinct (accent, variant) pairs, each with its own base pitch (espeak 0-99) and rate (words/min)."""
    pairs = [(a, v) for a in ACCENTS for v in VARIANTS]
    pick = rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)
    return [{"accent": pairs[i][0], "variant": pairs[i][1], "pitch": int(rng.integers(20, 60)),
             "rate": int(rng.integers(130, 200))} for i in pick]


def render(cmd_out: tuple[list[str], Path]) -> None:
    cmd, out = cmd_out
    subprocess.run(cmd + ["-w", str(out)], check=True, capture_output=True)


SPEAKERS, TAKES, SEED = 96, 4, 1  # the documented set (docs/experiments.md)


def espeak_missing() -> str | None:
    """Why synthesis cannot run here, or None."""
    return None if shutil.which("espeak-ng") else "the espeak-ng program is not installed (Debian: apt-get install espeak-ng)"


def synthesise(out: Path, speakers: int = SPEAKERS, takes: int = TAKES, seed: int = SEED) -> Path:
    """Render speakers x 10 digits x takes WAV files under `out` and return the manifest's path (kept when it
    exists: the same arguments render the same voices)."""
    if espeak_missing():
        raise SystemExit(espeak_missing())
    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows, jobs = [["path", "label", "group"]], []
    for k, v in enumerate(voices(speakers, rng)):
        group = f"synth{k:02d}-{v['accent']}-{v['variant']}"
        for d, word in enumerate(WORDS):
            for t in range(takes):
                path = out / f"{d}_{group}_{t}.wav"
                pitch = int(np.clip(v["pitch"] + rng.integers(-8, 9), 0, 99))
                rate = int(v["rate"] * rng.uniform(0.85, 1.15))
                cmd = ["espeak-ng", "-v", f"{v['accent']}+{v['variant']}", "-p", str(pitch), "-s", str(rate),
                       "-a", str(int(rng.integers(60, 180))), word]
                jobs.append((cmd, path))
                rows.append([path.name, str(d), group])
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(render, jobs))
    with open(manifest.with_suffix(".tmp"), "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    manifest.with_suffix(".tmp").rename(manifest)  # written last: a manifest means every file is there
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--speakers", type=int, default=SPEAKERS)
    ap.add_argument("--takes", type=int, default=TAKES)
    ap.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args()
    print(synthesise(a.out, a.speakers, a.takes, a.seed))


if __name__ == "__main__":
    main()
