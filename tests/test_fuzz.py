"""Fuzzing decoding + feature extraction with hypothesis (bounded for CI): random bytes and mutated valid
WAV/FLAC files either give finite features of the right shape or raise AudioError, nothing else.
For long runs outside CI see experiments/fuzz_atheris.py (docs/robustness.md)."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from specrnn.audio import load_audio
from specrnn.config import FeatureConfig
from specrnn.errors import AudioError
from specrnn.features import FeatureExtractor

from .conftest import tone

CFG = FeatureConfig(max_seconds=2.0)
RANDOM = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
MUTATED = settings(RANDOM, max_examples=1500)


def _seed(fmt: str, subtype: str, sr: int = 16000, channels: int = 1) -> bytes:
    y = tone(440, 0.05, sr=sr)
    buf = io.BytesIO()
    sf.write(buf, np.stack([y] * channels, 1) if channels > 1 else y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


SEEDS = {
    "pcm16.wav": _seed("WAV", "PCM_16"),
    "float.wav": _seed("WAV", "FLOAT", 8000),
    "pcm24_stereo.wav": _seed("WAV", "PCM_24", 44100, 2),
    "u8.wav": _seed("WAV", "PCM_U8", 22050),
    "pcm16.flac": _seed("FLAC", "PCM_16"),
    "pcm24.flac": _seed("FLAC", "PCM_24", 48000, 2),
}
INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 44, 8000, 16000, 96000]


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(CFG)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check(data: bytes, suffix: str, folder: Path, extractor: FeatureExtractor) -> str:
    """Decode and extract; the only accepted failure is AudioError. Returns 'ok' or 'refused'."""
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    try:
        wave = load_audio(path, CFG.sample_rate, CFG.max_seconds, CFG.crop)
    except AudioError as e:
        assert e.path == str(path) and e.reason
        return "refused"
    assert wave.dtype == np.float32 and wave.ndim == 1 and 0 < len(wave) <= CFG.max_seconds * CFG.sample_rate + 2
    assert np.isfinite(wave).all()
    (feats,) = extractor.extract([wave])
    assert feats.shape == (1 + len(wave) // CFG.hop_length, CFG.n_features) and np.isfinite(feats).all()
    return "ok"


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("field"), st.integers(0, 80), st.sampled_from(INTERESTING)),  # header fields: sizes, rates
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 64)),
)


def mutate(blob: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(blob)
    for op, pos, value in ops:
        pos = pos % (len(b) + 1)
        if op == "set" and pos < len(b):
            b[pos] = value
        elif op == "field":
            b[pos : pos + 4] = struct.pack("<I", value)
        elif op == "truncate":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = bytes([value]) * 8
        elif op == "delete":
            del b[pos : pos + value]
    return bytes(b)


@RANDOM
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".aiff"]))
def test_random_bytes_decode_or_raise_audio_error(data, suffix, scratch, extractor):
    event(check(data, suffix, scratch, extractor))


@MUTATED
@given(seed=st.sampled_from(sorted(SEEDS)), ops=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_wav_and_flac_decode_or_raise_audio_error(seed, ops, scratch, extractor):
    event(f"{Path(seed).suffix} {check(mutate(SEEDS[seed], ops), Path(seed).suffix, scratch, extractor)}")


def test_the_seeds_themselves_decode(scratch, extractor):
    """The mutation fuzzer starts from files that decode: otherwise it would only ever test refusals."""
    assert [check(blob, Path(name).suffix, scratch, extractor) for name, blob in SEEDS.items()] == ["ok"] * len(SEEDS)
