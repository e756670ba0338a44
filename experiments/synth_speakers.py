"""Experiment (not a feature): synthetic speakers for FSDD's digits, spoken by espeak-ng.

Five training voices are what limits FSDD's unseen-speaker accuracy (docs/experiments.md, the speaker-count study).
This renders the ten digit words with espeak-ng's formant synthesiser in many synthetic voices, each an English
accent (American, British, Scottish, Caribbean...) and a voice variant (formants, breathiness), with its own base
pitch and rate; each take jitters pitch, rate and loudness. It writes a manifest (`path,label,group`, one group per
synthetic voice) for `specrnn cv --train-extra`, which adds its rows to every fold's training part, never to
validation or test.

`--engine donors` renders instead with flite and festival, whose voices are cut from recordings of five people
(CMU's kal, awb, rms and slt, and ked): diphone, unit-selection and HMM voices, whose consonants come from real
speech, where espeak-ng's are formant rules. Each voice is a donor with its own pitch (flite), duration stretch and
speed factor (pitch, formants and duration together, as in speed perturbation), written at FSDD's 8 kHz.

`--engine accents` renders foreign-accented English the same way: festival's Italian, Czech, Finnish and Russian
voices (one recorded man each) read the digit words respelt in their own orthography ("tri", "sics", "сри").

Needs the espeak-ng program (Debian: apt-get install espeak-ng), or for donors flite and festival (apt-get install
flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts), or for accents festival and its voices
(apt-get install festvox-itapc16k festvox-czech-machac festvox-czech-ph festvox-suopuhe-mv festvox-ru); none is a
dependency of specrnn.

python -m experiments.synth_speakers --out DIR [--engine espeak|donors|accents] [--speakers 96] [--takes 4] [--seed 1]
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


# (program, voice, its natural mean f0 in Hz or None where the program cannot set it)
DONORS = [("flite", "kal16", 105), ("flite", "awb", 110), ("flite", "rms", 100), ("flite", "slt", 170),
          ("flite", "kal", 105), ("festival", "kal_diphone", None), ("festival", "ked_diphone", None),
          ("festival", "cmu_us_slt_arctic_hts", None)]
DONOR_PROGRAMS = {"flite": "flite", "festival": "text2wave"}

# Foreign-accented English: festival's voices of other languages (each cut from one man's recordings) read the
# digit words respelt in their own orthography, the way a speaker of that language tends to say them.
RESPELT = {
    "it": ["ziro", "uan", "tu", "tri", "for", "faiv", "sics", "seven", "eit", "nain"],
    "cs": ["zírou", "uan", "tú", "trí", "fór", "fajv", "siks", "sevn", "ejt", "najn"],
    "fi": ["siirou", "uan", "tuu", "trii", "foor", "faiv", "siks", "seven", "eit", "nain"],
    "ru": ["зироу", "уан", "ту", "сри", "фор", "файв", "сикс", "севен", "эйт", "найн"],
}
ACCENTED = [("pc_diphone", "it"), ("czech_machac", "cs"), ("czech_ph", "cs"), ("hy_fi_mv_diphone", "fi"),
            ("msu_ru_nsh_clunits", "ru")]  # (festival voice, language of its respelling)
ACCENTED_PACKAGES = "festival festvox-itapc16k festvox-czech-machac festvox-czech-ph festvox-suopuhe-mv festvox-ru"


def donor_voices(n: int, rng: np.random.Generator, accented: bool = False) -> list[dict]:
    """`n` voices cycling over DONORS (or ACCENTED), each with its own pitch scale, duration stretch and speed
    factor."""
    pool = [("festival", voice, None, lang) for voice, lang in ACCENTED] if accented else \
        [(program, voice, f0, None) for program, voice, f0 in DONORS]
    return [{"program": program, "voice": voice, "f0": f0, "pitch": float(rng.uniform(0.8, 1.2)),
             "stretch": float(rng.uniform(0.85, 1.25)), "speed": float(rng.uniform(0.9, 1.1)),
             "spell": dict(zip(WORDS, RESPELT[lang])) if lang else {}}
            for program, voice, f0, lang in (pool[k % len(pool)] for k in range(n))]


def render_donor(job: tuple[dict, str, Path, np.random.Generator]) -> None:
    """One take: the donor's program writes a WAV, which is replayed at the take's speed and resampled to 8 kHz."""
    import soundfile as sf
    import soxr

    v, word, out, rng = job
    word = v["spell"].get(word, word)
    tmp = out.with_suffix(".raw.wav")
    stretch = v["stretch"] * rng.uniform(0.9, 1.1)
    if v["program"] == "flite":
        cmd = ["flite", "-voice", v["voice"], "-t", word, "-o", str(tmp), "--setf", f"duration_stretch={stretch:.3f}",
               "--setf", f"int_f0_target_mean={v['f0'] * v['pitch'] * rng.uniform(0.92, 1.08):.1f}"]
        subprocess.run(cmd, check=True, capture_output=True)
    else:
        for attempt in range(4):  # festival's Italian diphone voice crashes at a few stretch values: nudge it
            cmd = ["text2wave", "-eval", f"(voice_{v['voice']})", "-eval",
                   f"(Parameter.set 'Duration_Stretch {stretch + 0.013 * attempt:.3f})", "-o", str(tmp)]
            done = subprocess.run(cmd, input=word.encode(), capture_output=True)
            if done.returncode == 0:
                break
        done.check_returncode()
    x, sr = sf.read(tmp, dtype="float32")
    tmp.unlink()
    speed = v["speed"] * rng.uniform(0.98, 1.02)
    y = soxr.resample(x, sr * speed, 8000)  # played `speed` times faster, then sampled at 8 kHz
    y *= 10 ** (rng.uniform(-12, 0) / 20) * 0.9 / max(1e-6, float(np.abs(y).max()))
    sf.write(out, y, 8000, subtype="PCM_16")


SPEAKERS, TAKES, SEED = 96, 4, 1  # the documented set (docs/experiments.md)


def programs_missing(engine: str = "espeak") -> str | None:
    """Why `engine`'s synthesis cannot run here, or None."""
    need = {"espeak": ["espeak-ng"], "donors": list(DONOR_PROGRAMS.values()), "accents": ["text2wave"]}[engine]
    missing = [p for p in need if not shutil.which(p)]
    if engine == "accents" and not missing:
        missing = [v for v, _ in ACCENTED if not list(Path("/usr/share/festival/voices").glob(f"*/{v}"))]
    if not missing:
        return None
    return f"{', '.join(missing)} not installed (Debian: apt-get install " + {
        "espeak": "espeak-ng)", "donors": "flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)",
        "accents": ACCENTED_PACKAGES + ")"}[engine]


def synthesise(out: Path, speakers: int = SPEAKERS, takes: int = TAKES, seed: int = SEED, engine: str = "espeak") -> Path:
    """Render speakers x 10 digits x takes WAV files under `out` and return the manifest's path (kept when it
    exists: the same arguments render the same voices)."""
    missing = programs_missing(engine)
    if missing:
        raise SystemExit(missing)
    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    donors = engine in ("donors", "accents")
    rows, jobs = [["path", "label", "group"]], []
    for k, v in enumerate(donor_voices(speakers, rng, engine == "accents") if donors else voices(speakers, rng)):
        group = f"{'accent' if v['spell'] else 'donor'}{k:02d}-{v['voice']}" if donors else f"synth{k:02d}-{v['accent']}-{v['variant']}"
        for d, word in enumerate(WORDS):
            for t in range(takes):
                path = out / f"{d}_{group}_{t}.wav"
                # espeak-ng takes draw from the shared generator, in this order (the documented set depends on it)
                jobs.append((v, word, path, np.random.default_rng([seed, k, d, t])) if donors
                            else (_espeak_command(v, word, rng), path))
                rows.append([path.name, str(d), group])
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(render_donor if donors else render, jobs))
    with open(manifest.with_suffix(".tmp"), "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    manifest.with_suffix(".tmp").rename(manifest)  # written last: a manifest means every file is there
    return manifest


def _espeak_command(v: dict, word: str, rng: np.random.Generator) -> list[str]:
    """One espeak-ng take of `word` in voice `v`, with jittered pitch, rate and loudness."""
    pitch = int(np.clip(v["pitch"] + rng.integers(-8, 9), 0, 99))
    rate = int(v["rate"] * rng.uniform(0.85, 1.15))
    return ["espeak-ng", "-v", f"{v['accent']}+{v['variant']}", "-p", str(pitch), "-s", str(rate),
            "-a", str(int(rng.integers(60, 180))), word]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--speakers", type=int, default=SPEAKERS)
    ap.add_argument("--takes", type=int, default=TAKES)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--engine", choices=["espeak", "donors", "accents"], default="espeak")
    a = ap.parse_args()
    print(synthesise(a.out, a.speakers, a.takes, a.seed, a.engine))


if __name__ == "__main__":
    main()
