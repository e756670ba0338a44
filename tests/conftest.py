"""Shared fixtures: real data under ../shared/data (skipped with a reason when absent), synthesised audio,
and a private feature cache per test session."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPECRNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
FSDD = SHARED / "fsdd" / "recordings"
ESC10 = SHARED / "esc10"
YESNO = SHARED / "yesno"


def onnx_export_skip_reason() -> str | None:
    """Why ONNX export cannot be tested here (a missing package, or a torch whose exporter fails on RNNs), else None."""
    import importlib.util

    import torch

    for name in ("onnx", "onnxscript", "onnxruntime"):
        if importlib.util.find_spec(name) is None:
            return f"ONNX export needs {name} (pip install 'specrnn[export]')"
    if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 13):
        return f"torch {torch.__version__}'s exporter fails on recurrent layers (seen with 2.11); export is tested with 2.13"
    return None


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Keep the user's ~/.cache untouched: every test session gets its own feature cache."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("SPECRNN_CACHE")
    os.environ["SPECRNN_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SPECRNN_CACHE", None)
    else:
        os.environ["SPECRNN_CACHE"] = old


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the shared data folder beside the checkout); set SPECRNN_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def fsdd() -> Path:
    return need(FSDD)


@pytest.fixture(scope="session")
def esc10() -> Path:
    return need(ESC10)


@pytest.fixture(scope="session")
def yesno() -> Path:
    return need(YESNO)


def tone(freq: float = 440.0, seconds: float = 0.5, sr: int = 16000, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.01
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write(path: Path, wave: np.ndarray, sr: int = 16000, subtype: str | None = None, format: str | None = None) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, subtype=subtype, format=format)
    return path


def low_high_clip(path: Path, i: int, rng: np.random.Generator, seconds: float | None = None, gain: float = 1.0,
                  subtype: str | None = None) -> str:
    """Write clip `i` of a two-class tone set (even i: a low tone, odd i: a high one) and return its label."""
    label = ("low", "high")[i % 2]
    freq = rng.uniform(200, 400) if label == "low" else rng.uniform(2000, 4000)
    write(path, gain * tone(freq, rng.uniform(0.2, 0.5) if seconds is None else seconds, seed=i), subtype=subtype)
    return label


def speakers_manifest(root: Path, gains: dict[str, float] | None = None, subtype: str | None = None) -> Path:
    """48 low/high clips from 4 speakers (root/spkK/i.wav, speaker K = i % 4, each at its own `gains` level) and
    their manifest root/m.csv with a group column."""
    import csv

    rng = np.random.default_rng(0)
    rows = [["path", "label", "group"]]
    for i in range(48):
        g = f"spk{i % 4}"
        rows.append([f"{g}/{i}.wav", low_high_clip(root / g / f"{i}.wav", i, rng, gain=(gains or {}).get(g, 1.0), subtype=subtype), g])
    with open(root / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return root / "m.csv"


def write_tone_folder(root: Path) -> Path:
    """A small folder-per-class data set under `root`: low tones vs high tones, 24 clips each, 0.2-0.8 s."""
    rng = np.random.default_rng(0)
    for label, lo, hi in (("low", 200, 400), ("high", 2000, 4000)):
        for i in range(24):
            write(root / label / f"{label}_{i}.wav", tone(rng.uniform(lo, hi), rng.uniform(0.2, 0.8), seed=i))
    return root


@pytest.fixture
def tone_folder(tmp_path) -> Path:
    return write_tone_folder(tmp_path / "tones")
