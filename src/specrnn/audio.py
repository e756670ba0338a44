"""Decoding: any file soundfile reads -> mono float32 at the configured rate (soxr), cropped by policy.

Every way a file can be unusable becomes an `AudioError` naming the path and the reason.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import AudioError

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64"}
MIN_SECONDS = 0.01  # shorter clips (a 1-sample file) are refused: no frame of sound to learn from
RATE_RANGE = (1000, 1_000_000)  # Hz; outside it a header is corrupt (or the file is not sound we can use)
MAX_PEAK = 1e6  # float audio is nominally within +-1 (some tools write +-32768); far beyond that the file is corrupt


def load_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None, crop: str = "start") -> np.ndarray:
    """Decode `path` to mono float32 at `sample_rate`. Only the kept part of a long file is read."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found" + (" (a broken symbolic link)" if path.is_symlink() else ""))
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file")
    if not path.is_file():  # a FIFO or device would block or never end
        raise AudioError(path, "not a regular file (a pipe, socket or device)")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "permission denied (the file is not readable)")
    try:
        if path.stat().st_size == 0:
            raise AudioError(path, "empty file (0 bytes)")
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    return _decode(str(path), path, sample_rate, max_seconds, crop)


def decode_audio(data: bytes, name: str, sample_rate: int, max_seconds: float | None = None, crop: str = "start") -> np.ndarray:
    """Decode audio held in memory (an upload) with the same checks as `load_audio`; `name` only labels errors,
    nothing touches the file system."""
    import io

    if not data:
        raise AudioError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, sample_rate, max_seconds, crop)


def _decode(source, path: str | Path, sample_rate: int, max_seconds: float | None, crop: str) -> np.ndarray:
    """soundfile source (a path or a file object) -> checked mono float32 at `sample_rate`; errors name `path`."""
    import soundfile as sf

    try:
        with sf.SoundFile(source) as f:
            sr, frames = f.samplerate, f.frames
            if not RATE_RANGE[0] <= sr <= RATE_RANGE[1]:
                raise AudioError(path, f"unsupported sample rate {sr} Hz (corrupt header?)")
            keep = frames
            if max_seconds is not None and 0 < frames and frames > max_seconds * sr:
                keep = int(math.ceil(max_seconds * sr))
                if crop == "center" and f.seekable():
                    f.seek((frames - keep) // 2)
            data = f.read(keep, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except MemoryError:
        raise AudioError(path, "too large to decode (use features.max_seconds to crop)") from None
    except Exception as e:  # libsndfile reports every format problem as a RuntimeError subclass
        reason = str(e).split(": ", 1)[-1].strip() if str(e) else type(e).__name__
        if "does not exist" in reason or "not a regular file" in reason:  # libsndfile's words for "no decoder took it"
            reason = "format not recognised, or the file is corrupt"
        raise AudioError(path, f"cannot decode as audio ({reason})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples (decodes to 0 frames)")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise AudioError(path, "contains NaN or infinite samples")
    if not np.any(wave):
        raise AudioError(path, "digital silence (every sample is zero)")
    peak = float(np.abs(wave).max())
    if peak > MAX_PEAK:
        raise AudioError(path, f"sample values out of range (peak {peak:.3g}; float audio should be within +-1)")
    if wave.shape[0] < MIN_SECONDS * sr:
        raise AudioError(path, f"too short: {wave.shape[0]} sample(s) at {sr} Hz (minimum {MIN_SECONDS * 1000:.0f} ms)")
    try:
        return resample(np.ascontiguousarray(wave, dtype=np.float32), sr, sample_rate)
    except MemoryError:
        raise AudioError(path, "too large to resample (use features.max_seconds to crop)") from None
    except Exception as e:
        raise AudioError(path, f"cannot resample from {sr} Hz to {sample_rate} Hz ({type(e).__name__}: {e})") from None


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (same output as librosa.resample's soxr_hq)."""
    if orig_rate == target_rate:
        return wave
    import soxr

    return soxr.resample(wave, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def load_many(
    paths: list[str | Path], sample_rate: int, max_seconds: float | None = None, crop: str = "start", threads: int = 2
) -> list[np.ndarray | AudioError]:
    """Decode many files (libsndfile and soxr release the GIL, so threads help); errors are returned, not raised."""

    def one(p):
        try:
            return load_audio(p, sample_rate, max_seconds, crop)
        except AudioError as e:
            return e

    if threads <= 1 or len(paths) < 8 or _mean_size(paths[:64]) < THREADED_MIN_BYTES:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, paths))


# Below this mean file size, decoding is mostly Python-side checks holding the GIL and a second thread slows it down
# (FSDD's 7 KB WAVs: 0.50 s on one thread, 0.94 s on two); longer files spend their time in libsndfile and soxr,
# which release the GIL (ESC-10's 5 s OGGs: 2.9 s on one thread, 1.4 s on two).
THREADED_MIN_BYTES = 64_000


def _mean_size(paths: list[str | Path]) -> float:
    sizes = []
    for p in paths:
        try:
            sizes.append(os.path.getsize(p))
        except OSError:
            pass
    return sum(sizes) / len(sizes) if sizes else 0.0
