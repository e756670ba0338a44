"""Coverage-guided fuzzing of decoding + feature extraction with atheris (libFuzzer), for long runs outside CI.

Every input either yields finite features of the right shape or raises specrnn.errors.AudioError; anything else
(another exception, NaN features, a hang, a crash in a C decoder) is a finding, saved by libFuzzer as crash-*.

    pip install atheris
    python experiments/fuzz_atheris.py -max_total_time=600            # seeds written to a fresh corpus folder
    python experiments/fuzz_atheris.py CORPUS_DIR -runs=100000         # or keep and grow a corpus
    python experiments/fuzz_atheris.py crash-XXXX                      # replay one finding

An input is one selector byte (which file extension the bytes get: .wav .flac .ogg .mp3 .aiff) then the file.
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports():
    from specrnn.audio import load_audio
    from specrnn.errors import AudioError

from specrnn.config import FeatureConfig  # noqa: E402
from specrnn.features import FeatureExtractor  # noqa: E402

SUFFIXES = [".wav", ".flac", ".ogg", ".mp3", ".aiff"]
CFG = FeatureConfig(max_seconds=2.0)
EXTRACTOR = FeatureExtractor(CFG)
SCRATCH = Path(tempfile.mkdtemp(prefix="specrnn-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def one_input(data: bytes) -> None:
    """The property: finite features of the right shape, or AudioError."""
    if not data:
        return
    path = SCRATCH / f"input{SUFFIXES[data[0] % len(SUFFIXES)]}"
    path.write_bytes(data[1:])
    try:
        wave = load_audio(path, CFG.sample_rate, CFG.max_seconds, CFG.crop)
    except AudioError:
        return
    if not (wave.ndim == 1 and 0 < len(wave) <= CFG.max_seconds * CFG.sample_rate + 2 and np.isfinite(wave).all()):
        raise AssertionError(f"bad waveform: shape {wave.shape}")
    (feats,) = EXTRACTOR.extract([wave])
    if feats.shape != (1 + len(wave) // CFG.hop_length, CFG.n_features) or not np.isfinite(feats).all():
        raise AssertionError(f"bad features: shape {feats.shape}, finite {np.isfinite(feats).all()}")


def write_seeds(folder: Path) -> None:
    """Valid files of each format as the starting corpus (libFuzzer mutates and grows it)."""
    import soundfile as sf

    t = np.arange(800) / 16000
    y = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for i, (fmt, subtype, sr, ch) in enumerate([("WAV", "PCM_16", 16000, 1), ("WAV", "FLOAT", 8000, 1),
                                                ("WAV", "PCM_24", 44100, 2), ("WAV", "PCM_U8", 22050, 1),
                                                ("FLAC", "PCM_16", 16000, 1), ("FLAC", "PCM_24", 48000, 2),
                                                ("OGG", "VORBIS", 16000, 1), ("AIFF", "PCM_16", 16000, 1)]):
        buf = io.BytesIO()
        sf.write(buf, np.stack([y] * ch, 1) if ch > 1 else y, sr, format=fmt, subtype=subtype)
        selector = SUFFIXES.index({"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "AIFF": ".aiff"}[fmt])
        (folder / f"seed-{i}-{fmt.lower()}-{subtype.lower()}").write_bytes(bytes([selector]) + buf.getvalue())


def main() -> None:
    args = sys.argv[1:]
    if not any(not a.startswith("-") for a in args):  # no corpus or crash file given: start from the seeds
        corpus = Path(tempfile.mkdtemp(prefix="specrnn-fuzz-corpus-"))
        write_seeds(corpus)
        print(f"corpus: {corpus}", file=sys.stderr)
        args.append(str(corpus))
    atheris.Setup([sys.argv[0], *args], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
