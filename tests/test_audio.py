"""Decoding real formats, mono mixing, resampling, cropping, and every unusable file named with its reason."""
import os

import numpy as np
import pytest

from specrnn.audio import load_audio, load_many
from specrnn.errors import AudioError

from .conftest import tone, write


@pytest.mark.parametrize("ext,fmt,subtype", [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
                                             ("mp3", "MP3", "MPEG_LAYER_III")])
def test_formats_decode_to_the_same_sound(tmp_path, ext, fmt, subtype):
    y = tone(440, 1.0, sr=16000)
    path = write(tmp_path / f"a.{ext}", y, 16000, subtype=subtype, format=fmt)
    out = load_audio(path, 16000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - len(y)) <= 2000  # mp3 adds encoder delay/padding
    n = min(len(y), len(out))
    spec = lambda s: np.abs(np.fft.rfft(s[:n]))  # noqa: E731
    assert np.argmax(spec(out)) == np.argmax(spec(y))  # same dominant frequency after a lossy codec


def test_multichannel_is_mixed_to_mono_and_resampled(tmp_path):
    left, right = tone(300, 0.5, sr=44100), tone(300, 0.5, sr=44100, amp=0.1)
    six = np.stack([left, right, left, right, left, right], axis=1)
    path = write(tmp_path / "six.wav", six, 44100, subtype="FLOAT")
    out = load_audio(path, 44100)
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)
    out16 = load_audio(path, 16000)
    assert abs(len(out16) - round(len(left) * 16000 / 44100)) <= 1


def test_long_file_is_cropped_when_read(tmp_path):
    y = np.concatenate([tone(200, 2.0), tone(2000, 2.0)])
    path = write(tmp_path / "long.wav", y)
    start = load_audio(path, 16000, max_seconds=1.0, crop="start")
    centre = load_audio(path, 16000, max_seconds=1.0, crop="center")
    assert len(start) == len(centre) == 16000
    np.testing.assert_allclose(start, y[:16000], atol=1e-4)
    np.testing.assert_allclose(centre, y[24000:40000], atol=1e-4)


def _expect(path, fragment):
    with pytest.raises(AudioError) as e:
        load_audio(path, 16000)
    assert str(path) in str(e.value) and fragment in e.value.reason, e.value.reason


def test_unusable_files_are_named_with_their_reason(tmp_path):
    _expect(tmp_path / "missing.wav", "not found")
    (tmp_path / "empty.wav").write_bytes(b"")
    _expect(tmp_path / "empty.wav", "empty file")
    (tmp_path / "noise.wav").write_bytes(os.urandom(3000))
    _expect(tmp_path / "noise.wav", "cannot decode")
    (tmp_path / "text.mp3").write_text("this is not audio\n" * 20)
    _expect(tmp_path / "text.mp3", "cannot decode")
    write(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32))
    _expect(tmp_path / "silent.wav", "silence")
    bad = tone(440, 0.2)
    bad[100] = np.nan
    write(tmp_path / "nan.wav", bad, subtype="FLOAT")
    _expect(tmp_path / "nan.wav", "NaN")
    write(tmp_path / "one.wav", np.array([0.5], dtype=np.float32))
    _expect(tmp_path / "one.wav", "too short")


def test_load_many_returns_errors_in_place(tmp_path):
    good = write(tmp_path / "good.wav", tone())
    out = load_many([good, tmp_path / "nope.wav"] * 5, 16000)
    assert [isinstance(o, AudioError) for o in out] == [False, True] * 5
