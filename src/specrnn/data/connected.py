"""Connected-digit utterances built from FSDD single-digit recordings, for CTC training.

Each utterance joins 2-7 recordings of one speaker, all from the test takes (0-4) or all from the train takes
(5-49), so the standard FSDD split carries over: no test recording is ever heard in a train utterance.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import SpecrnnError
from ..files import atomic_write_bytes, atomic_write_text

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")  # {digit}_{speaker}_{take}.wav
SR = 8000
TEST_TAKES = 5  # takes 0-4 are FSDD's test set
TEST_SHARE = 0.1  # about this share of each speaker's utterances is test
NOISE_RMS = 1e-4  # low-level background noise (about -80 dBFS), so gaps are not digital silence
PEAK = 0.99 - 2 / 32768  # 0.99 less two 16-bit steps, so rounding to PCM_16 cannot push the peak past 0.99


def find_recordings(fsdd: Path) -> dict[str, dict[str, list[tuple[int, Path]]]]:
    """speaker -> {'test': [(digit, path)], 'train': [...]}, sorted by file name so the result is reproducible."""
    root = fsdd / "recordings" if (fsdd / "recordings").is_dir() else fsdd
    files = sorted(root.iterdir(), key=lambda p: p.name) if root.is_dir() else []
    found: dict[str, dict[str, list[tuple[int, Path]]]] = {}
    for f in files:
        m = NAME.match(f.name)
        if m and f.is_file():
            split = "test" if int(m.group(3)) < TEST_TAKES else "train"
            found.setdefault(m.group(2), {"test": [], "train": []})[split].append((int(m.group(1)), f))
    if not found:
        raise SpecrnnError(f"{root}: no FSDD recordings named {{digit}}_{{speaker}}_{{take}}.wav "
                           f"({'folder is empty' if root.is_dir() and not files else 'none match' if files else 'no such folder'})")
    return found


def read_clip(path: Path, cache: dict[Path, np.ndarray]) -> np.ndarray:
    """A recording as float32 mono at 8 kHz (read once, then from `cache`)."""
    if path not in cache:
        try:
            wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise SpecrnnError(f"{path}: cannot read this recording ({e})") from None
        if sr != SR:
            raise SpecrnnError(f"{path}: sample rate {sr} Hz, expected {SR} Hz (FSDD recordings are 8 kHz)")
        cache[path] = wave.mean(axis=1)
    return cache[path]


def build_utterance(clips: list[np.ndarray], rng: np.random.Generator, gap_seconds: tuple[float, float],
                    gain_db: tuple[float, float]) -> np.ndarray:
    """Lead silence, each clip at a random gain with random gaps between, tail silence; low noise; peak <= 0.99."""
    pieces = [np.zeros(int(rng.uniform(0.05, 0.15) * SR), np.float32)]
    for i, clip in enumerate(clips):
        if i:
            pieces.append(np.zeros(int(rng.uniform(*gap_seconds) * SR), np.float32))
        pieces.append(clip * np.float32(10 ** (rng.uniform(*gain_db) / 20)))
    pieces.append(np.zeros(int(rng.uniform(0.05, 0.15) * SR), np.float32))
    wave = np.concatenate(pieces)
    wave += rng.standard_normal(len(wave)).astype(np.float32) * np.float32(NOISE_RMS)
    peak = float(np.abs(wave).max())
    return wave * np.float32(PEAK / peak) if peak > PEAK else wave  # scale down only: keeps the gain variety


def make_connected_digits(fsdd: str | Path, out: str | Path, per_speaker: int = 60, min_digits: int = 2,
                          max_digits: int = 7, seed: int = 0, gap_seconds: tuple[float, float] = (0.05, 0.3),
                          gain_db: tuple[float, float] = (-6.0, 6.0)) -> Path:
    """Write `per_speaker` connected-digit WAVs per FSDD speaker under out/audio/ and return out/manifest.csv
    (path, label as digit words, split, speaker, sources); the same arguments give the same bytes. The speaker is
    not the manifest's `group` column: FSDD's standard split (takes 0-4 test) has every speaker on both sides, which
    a group column would refuse as a leak; for speaker-disjoint figures use it as one (`cv --group-column speaker`)."""
    if not 1 <= min_digits <= max_digits:
        raise SpecrnnError(f"min_digits={min_digits}, max_digits={max_digits}: need 1 <= min_digits <= max_digits")
    if per_speaker < 1:
        raise SpecrnnError(f"per_speaker={per_speaker}: need at least 1 utterance per speaker")
    if not 0 <= gap_seconds[0] <= gap_seconds[1] or gain_db[0] > gain_db[1]:
        raise SpecrnnError(f"gap_seconds={gap_seconds}, gain_db={gain_db}: each needs low <= high (gaps >= 0)")
    found = find_recordings(Path(fsdd))
    out = Path(out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cache: dict[Path, np.ndarray] = {}
    rows = [["path", "label", "split", "speaker", "sources"]]
    for speaker in sorted(found):
        pools = found[speaker]
        test = rng.random(per_speaker) < TEST_SHARE
        if not test.any():
            test[rng.integers(per_speaker)] = True  # every speaker gets a test utterance
        for index in range(per_speaker):
            split = "test" if test[index] else "train"
            if not pools[split]:  # a partial copy of FSDD may lack one set of takes: use the other
                split = "train" if split == "test" else "test"
            pool = pools[split]
            n = int(rng.integers(min_digits, max_digits + 1))
            picks = [pool[i] for i in rng.choice(len(pool), n, replace=len(pool) < n)]
            wave = build_utterance([read_clip(p, cache) for _, p in picks], rng, gap_seconds, gain_db)
            name = f"audio/{speaker}_{index:04d}.wav"
            buf = io.BytesIO()
            sf.write(buf, wave, SR, subtype="PCM_16", format="WAV")
            atomic_write_bytes(out / name, buf.getvalue(), durable=False)  # temp file, then rename
            rows.append([name, " ".join(WORDS[d] for d, _ in picks), split, speaker, ";".join(p.name for _, p in picks)])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_text(out / "manifest.csv", buf.getvalue())  # temp file in the same folder, then os.replace
    return out / "manifest.csv"
