"""Connected-digit utterances from FSDD: loadable manifest, split hygiene, determinism, lengths, bad input."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from specrnn.data.connected import WORDS, make_connected_digits
from specrnn.data.manifest import load_manifest
from specrnn.errors import SpecrnnError


@pytest.fixture(scope="module")
def built(fsdd, tmp_path_factory) -> Path:
    return make_connected_digits(fsdd, tmp_path_factory.mktemp("connected"), per_speaker=4, seed=0)


def rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def test_manifest_loads_and_keeps_splits_apart(built, fsdd):
    man = load_manifest(built)
    speakers = {f.name.split("_")[1] for f in fsdd.glob("*_*_*.wav")}
    assert len(man) == 4 * len(speakers)
    assert set(man.extra["speaker"]) == speakers
    assert set(man.splits) <= {"train", "test"}
    assert all(Path(p).is_file() and Path(p).is_absolute() for p in man.paths)
    for label, sources in zip(man.labels, man.extra["sources"]):
        words = label.split(" ")
        assert 2 <= len(words) <= 7 and set(words) <= set(WORDS)
        names = sources.split(";")
        assert [WORDS[int(n.split("_")[0])] for n in names] == words  # label = the digits of its sources, in order
    for speaker in speakers:
        assert "test" in [s for s, g in zip(man.splits, man.extra["speaker"]) if g == speaker], f"{speaker} has no test utterance"
    for split, group, sources in zip(man.splits, man.extra["speaker"], man.extra["sources"]):
        takes = [int(Path(n).stem.split("_")[2]) for n in sources.split(";")]
        assert all(n.split("_")[1] == group for n in sources.split(";")), "an utterance mixes speakers"
        if split == "test":
            assert all(t <= 4 for t in takes), f"test utterance uses train takes: {sources}"
        else:
            assert all(t >= 5 for t in takes), f"train utterance uses test takes: {sources}"


def test_same_seed_same_bytes(fsdd, tmp_path):
    a, b, c = (make_connected_digits(fsdd, tmp_path / d, per_speaker=3, seed=s) for d, s in (("a", 7), ("b", 7), ("c", 8)))
    assert a.read_text() == b.read_text()
    wavs = sorted(p.name for p in (tmp_path / "a" / "audio").iterdir())
    assert wavs and wavs == sorted(p.name for p in (tmp_path / "b" / "audio").iterdir())
    assert all((tmp_path / "a" / "audio" / w).read_bytes() == (tmp_path / "b" / "audio" / w).read_bytes() for w in wavs)
    assert a.read_text() != c.read_text()
    assert any((tmp_path / "a" / "audio" / w).read_bytes() != (tmp_path / "c" / "audio" / w).read_bytes() for w in wavs)


def test_lengths_and_peak(built, fsdd):
    for row in rows(built):
        wave, sr = sf.read(str(built.parent / row["path"]), dtype="float32")
        assert sr == 8000 and wave.ndim == 1
        assert sf.info(str(built.parent / row["path"])).subtype == "PCM_16"
        sources = sum(sf.info(str(fsdd / n)).frames for n in row["sources"].split(";"))
        assert len(wave) >= sources + 0.1 * sr  # at least the clips plus lead and tail silence
        assert 0.0 < float(np.abs(wave).max()) <= 0.99


def test_bad_input(tmp_path, fsdd):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecrnnError, match=str(empty)):
        make_connected_digits(empty, tmp_path / "out")
    (empty / "dog.wav").write_bytes(b"")
    with pytest.raises(SpecrnnError, match="none match"):
        make_connected_digits(empty, tmp_path / "out")
    for lo, hi in ((0, 3), (5, 4)):
        with pytest.raises(SpecrnnError, match="min_digits"):
            make_connected_digits(fsdd, tmp_path / "out", min_digits=lo, max_digits=hi)
    assert not (tmp_path / "out" / "manifest.csv").exists()
