"""The bad-input corpus of docs/robustness.md, generated here: each unusable file stops training before it starts
(default) or is skipped and listed in bad_files.csv (--on-error skip); odd but usable files train; manifest
structure errors always stop, before anything is written. Observed through the real CLI, or the library where
a CLI run adds nothing."""
from __future__ import annotations

import csv
import ctypes
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from specrnn.audio import load_audio
from specrnn.data.manifest import Manifest, from_csv, from_folder, load_manifest
from specrnn.data.splits import assign_splits
from specrnn.errors import AudioError, SpecrnnError

from .conftest import ROOT, tone, write

TINY = ["--set", "model.hidden=16", "--set", "model.layers=1", "--set", "train.batch_size=16", "--set", "train.patience=50"]


def run_cli(*args, preexec: Callable | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m specrnn ARGS` in a real subprocess (no check: callers assert on the exit code)."""
    return subprocess.run([sys.executable, "-m", "specrnn", *map(str, args)], capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec, cwd=cwd)


def main_cli(capsys, *args) -> tuple[int, str, str]:
    """The CLI's own entry point in this process (fast for commands that fail before training): (rc, out, err)."""
    from specrnn.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- unreadable files, also when tests run as root
def _drop_read_override() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so even
    root cannot read a chmod-000 file (prctl PR_CAPBSET_DROP)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def unreadable_file(folder: Path) -> tuple[Path | None, Callable | None, str]:
    """(a chmod-000 file, preexec for subprocesses that must not be able to read it, reason if impossible)."""
    path = write(folder / "unreadable.wav", tone(500, 0.3))
    os.chmod(path, 0)
    if os.geteuid() != 0:
        return path, None, ""
    probe = subprocess.run([sys.executable, "-c", "import sys; open(sys.argv[1], 'rb')", str(path)], capture_output=True,
                           preexec_fn=_safe_drop)
    if probe.returncode != 0 and b"PermissionError" in probe.stderr:
        return path, _safe_drop, ""
    os.chmod(path, 0o644)
    path.unlink()
    return None, None, "running as root without CAP_SETPCAP: chmod 000 cannot make a file unreadable here"


def _safe_drop() -> None:
    try:
        _drop_read_override()
    except OSError:
        pass  # the probe then reads the file and the case is skipped with its reason


# ---------------------------------------------------------------- the corpus
def _encode(wave: np.ndarray, sr: int = 16000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, subtype=subtype, format=fmt)
    return buf.getvalue()


def _with(value: float) -> np.ndarray:
    y = tone(700, 0.3)
    y[100] = value
    return y


GOOD = _encode(tone(440, 0.5))
# name -> (bytes, expected reason fragment); every one of these is unusable
UNUSABLE: dict[str, tuple[bytes, str]] = {
    "zero_bytes.wav": (b"", "empty file (0 bytes)"),
    "truncated_header.wav": (GOOD[:20], "cannot decode as audio"),
    "random_bytes.wav": (np.random.default_rng(0).bytes(4096), "cannot decode as audio"),
    "text.flac": (b"this is a text file, not audio\n" * 40, "cannot decode as audio"),
    "zero_samples.wav": (_encode(np.zeros(0, np.float32)), "no audio samples"),
    "one_sample.wav": (_encode(np.array([0.5], np.float32)), "too short: 1 sample"),
    "silence.wav": (_encode(np.zeros(8000, np.float32)), "digital silence"),
    "nan.wav": (_encode(_with(np.nan), subtype="FLOAT"), "NaN or infinite"),
    "inf.wav": (_encode(_with(np.inf), subtype="FLOAT"), "NaN or infinite"),
    "huge_float.wav": (_encode(_with(3e20), subtype="FLOAT"), "out of range"),
}
# name -> bytes; odd but usable: each must decode to the same sound as a plain 16-bit 16 kHz file
USABLE: dict[str, bytes] = {
    "data_chunk_longer_than_file.wav": GOOD[: 44 + (len(GOOD) - 44) // 2],
    "pcm_u8.wav": _encode(tone(440, 0.5), subtype="PCM_U8"),
    "pcm_24.wav": _encode(tone(440, 0.5), subtype="PCM_24"),
    "pcm_32.wav": _encode(tone(440, 0.5), subtype="PCM_32"),
    "float_64.wav": _encode(tone(440, 0.5).astype(np.float64), subtype="DOUBLE"),
    "six_channels.wav": _encode(np.stack([tone(440, 0.5, seed=c) for c in range(6)], axis=1)),
    **{f"rate_{sr}.wav": _encode(tone(440, 0.5, sr=sr), sr) for sr in (8000, 11025, 22050, 44100, 48000, 96000)},
    "name with spaces.wav": GOOD,
    "ñandú-日本語 ü.wav": GOOD,
    "long_60s.wav": _encode(tone(440, 60.0, sr=8000), 8000),
}


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_each_unusable_file_is_named_with_its_reason(tmp_path, name):
    data, fragment = UNUSABLE[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(AudioError) as e:
        load_audio(path, 16000, max_seconds=30.0)
    assert e.value.path == str(path) and str(path) in str(e.value) and fragment in e.value.reason, e.value.reason


def test_missing_file_and_broken_link_and_non_files(tmp_path):
    for path, fragment in ((tmp_path / "missing.wav", "file not found"), (tmp_path / "dir.wav", "is a folder")):
        if fragment == "is a folder":
            path.mkdir()
        with pytest.raises(AudioError, match=fragment):
            load_audio(path, 16000)
    os.symlink(tmp_path / "gone.wav", tmp_path / "link.wav")
    with pytest.raises(AudioError, match="broken symbolic link"):
        load_audio(tmp_path / "link.wav", 16000)
    os.mkfifo(tmp_path / "pipe.wav")  # opening a FIFO would block for ever
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path / "pipe.wav", 16000)


@pytest.mark.parametrize("name", sorted(set(USABLE) - {"long_60s.wav"}))
def test_odd_but_usable_files_decode_to_the_same_sound(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(USABLE[name])
    out = load_audio(path, 16000)
    reference = tone(440, 0.5)
    n = len(reference) // 2 if name.startswith("data_chunk") else len(reference)  # half the data is there
    assert out.dtype == np.float32 and abs(len(out) - n) <= 1, len(out)
    if name.startswith("rate_"):  # resampled: same pitch and level (its noise was drawn at another rate)
        spectrum = np.abs(np.fft.rfft(out))
        assert abs(np.argmax(spectrum) * 16000 / len(out) - 440) < 4
        assert abs(np.sqrt(np.mean(out**2)) - 0.3 / np.sqrt(2)) < 0.01
        return
    if name == "six_channels.wav":
        reference = np.mean([tone(440, 0.5, seed=c) for c in range(6)], axis=0)
    tol = 1 / 128 + 1e-6 if name == "pcm_u8.wav" else 1e-4  # one 8-bit quantisation step (libsndfile truncates)
    np.testing.assert_allclose(out, reference[:n], atol=tol)


def test_long_file_decodes_only_what_the_crop_keeps(tmp_path):
    """Memory stays bounded: a 60 s file with max_seconds=30 yields 30 s, read from the file (not decoded whole)."""
    path = tmp_path / "long.wav"
    path.write_bytes(USABLE["long_60s.wav"])
    assert sf.info(str(path)).frames == 60 * 8000
    assert len(load_audio(path, 16000, max_seconds=30.0)) == 30 * 16000
    assert len(load_audio(path, 16000, max_seconds=2.0, crop="center")) == 2 * 16000
    assert len(load_audio(path, 8000, max_seconds=None)) == 60 * 8000


def test_unreadable_file_is_named(tmp_path):
    path, preexec, reason = unreadable_file(tmp_path)
    if path is None:
        pytest.skip(reason)
    code = ("import sys\nfrom specrnn.audio import load_audio\nfrom specrnn.errors import AudioError\n"
            "try:\n    load_audio(sys.argv[1], 16000)\nexcept AudioError as e:\n    print(e.reason)")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, preexec_fn=preexec)
    assert r.returncode == 0 and "permission denied" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------- the corpus through the CLI
def make_corpus(root: Path) -> tuple[Path, dict[str, str], set[str], Callable | None]:
    """DATA/<class>/... with good clips, every unusable and every odd-but-usable file, a symlink loop, a class
    with one example and a label with a comma. Returns (root, unusable name -> reason, usable names, preexec)."""
    data = root / "corpus"
    rng = np.random.default_rng(0)
    classes = {"low": (200, 400), "high, bright": (2000, 4000)}  # a folder name with a comma becomes a label with one
    for label, (lo, hi) in classes.items():
        for i in range(10):
            write(data / label / f"{label[:4]}_{i}.wav", tone(rng.uniform(lo, hi), rng.uniform(0.3, 0.6), seed=i))
    write(data / "solo" / "only.wav", tone(1000, 0.4))  # a class with one example
    expected = {}
    for i, (name, (blob, fragment)) in enumerate(sorted(UNUSABLE.items())):
        (data / list(classes)[i % 2] / name).write_bytes(blob)
        expected[name] = fragment
    os.symlink(data / "low" / "nowhere.wav", data / "low" / "broken_link.wav")
    expected["broken_link.wav"] = "broken symbolic link"
    unreadable, preexec, _ = unreadable_file(data / "high, bright")
    if unreadable is not None:
        expected["unreadable.wav"] = "permission denied"
    for i, (name, blob) in enumerate(sorted(USABLE.items())):
        folder = data / list(classes)[i % 2] / ("nested/deeper" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    (data / "low" / "nested").mkdir(exist_ok=True)
    os.symlink("..", data / "low" / "nested" / "loop")  # low/nested/loop -> low: a cycle
    return data, expected, set(USABLE), preexec


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("bad"))


def test_corpus_stops_training_before_it_starts(corpus, tmp_path):
    data, expected, usable, preexec = corpus
    run = tmp_path / "run"
    r = run_cli("train", data, "--out", run, *TINY, preexec=preexec)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("specrnn: error:") and "Traceback" not in r.stderr
    assert f"{len(expected)} unusable audio file(s)" in r.stderr and "--on-error skip" in r.stderr
    lines = r.stderr.splitlines()
    for name, fragment in expected.items():
        assert any(name in line and fragment in line for line in lines), (name, fragment, r.stderr)
    assert not any(name in r.stderr for name in usable)
    assert not (run / "model.pt").exists() and not (run / "checkpoints").exists()
    with open(run / "bad_files.csv", newline="") as f:
        assert {Path(row["path"]).name for row in csv.DictReader(f)} == set(expected)


def test_corpus_with_on_error_skip_trains_on_the_rest(corpus, tmp_path):
    data, expected, usable, preexec = corpus
    run = tmp_path / "run"
    r = run_cli("train", data, "--out", run, "--on-error", "skip", "--max-epochs", 1, *TINY, preexec=preexec)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"skipping {len(expected)} unusable file(s)" in r.stdout
    assert "warning: class 'solo' has 1 example(s)" in r.stdout  # kept in train, said so
    with open(run / "bad_files.csv", newline="") as f:
        bad = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(f)}
    assert set(bad) == set(expected) and all(expected[n] in bad[n] for n in bad), bad
    with open(run / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = [Path(row["path"]).name for row in rows]
    assert len(names) == len(set(names)) == 20 + 1 + len(usable)  # the symlink loop added no duplicate
    assert usable <= set(names)
    assert {row["label"] for row in rows} == {"low", "high, bright", "solo"}
    assert next(row["split"] for row in rows if row["label"] == "solo") == "train"
    assert (run / "model.pt").is_file() and (run / "metrics.json").is_file()


# ---------------------------------------------------------------- manifests
def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


MANIFEST_ERRORS = {
    "missing_column": ("path,lab\na.wav,x\n", "missing column 'label'"),
    "unknown_split": ("path,label,split\na.wav,x,train\nb.wav,y,holdout\n", "line 3: unknown split 'holdout'"),
    "duplicate_rows": ("path,label\na.wav,x\nb.wav,y\na.wav,x\n", "line 4: duplicate row"),
    "unquoted_comma_in_label": ("path,label\na.wav,x\nb.wav,big, loud\n", "line 3: 3 fields, header has 2"),
    "no_rows": ("path,label\n", "header but no rows"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_ERRORS))
def test_manifest_structure_errors_stop_before_anything_is_written(tmp_path, capsys, case):
    text, fragment = MANIFEST_ERRORS[case]
    for name in ("a.wav", "b.wav"):
        write(tmp_path / name, tone(300, 0.3))
    manifest = _csv(tmp_path / "data.csv", text)
    rc, _, err = main_cli(capsys, "train", manifest, "--out", tmp_path / "run", *TINY)
    assert rc == 2 and err.startswith(f"specrnn: error: {manifest}") and fragment in err, err
    assert not (tmp_path / "run").exists()


def test_manifest_error_through_a_real_process_has_no_traceback(tmp_path):
    manifest = _csv(tmp_path / "data.csv", MANIFEST_ERRORS["missing_column"][0])
    r = run_cli("train", manifest, "--out", tmp_path / "run", *TINY)
    assert r.returncode == 2 and r.stderr.startswith("specrnn: error:") and "Traceback" not in r.stderr


def test_empty_class_folder_stops_before_anything_is_written(tmp_path, capsys):
    write(tmp_path / "data" / "a" / "1.wav", tone(300, 0.3))
    (tmp_path / "data" / "empty").mkdir()
    (tmp_path / "data" / "empty" / "notes.txt").write_text("no audio here")
    rc, _, err = main_cli(capsys, "train", tmp_path / "data", "--out", tmp_path / "run", *TINY)
    assert rc == 2 and "class folder(s) with no audio files" in err and "empty" in err, err
    assert not (tmp_path / "run").exists()


def test_manifest_path_that_does_not_exist_stops_or_is_skipped(tmp_path):
    rows = ["path,label"]
    for label, f in (("a", 300), ("b", 3000)):
        for i in range(10):
            write(tmp_path / label / f"{i}.wav", tone(f + 10 * i, 0.3, seed=i))
            rows.append(f"{label}/{i}.wav,{label}")
    rows.append("a/not_there.wav,a")
    manifest = _csv(tmp_path / "data.csv", "\n".join(rows) + "\n")
    r = run_cli("train", manifest, "--out", tmp_path / "run", *TINY)
    assert r.returncode == 2 and f"{tmp_path / 'a' / 'not_there.wav'}: file not found" in r.stderr, r.stderr
    assert not (tmp_path / "run" / "model.pt").exists()
    with pytest.raises(AudioError, match="file not found"):  # --on-error skip lists it like any unusable file
        load_audio(load_manifest(manifest).paths[-1], 16000)


def test_manifest_paths_resolve_under_its_folder_and_never_reach_a_shell(tmp_path, monkeypatch):
    """Relative paths resolve under the CSV's folder, whatever the working directory; shell syntax in a path is
    just a (missing) file name."""
    marker = tmp_path / "PWNED"
    write(tmp_path / "sub" / "a.wav", tone(300, 0.3))
    evil = [f"$(touch {marker}).wav", f"; touch {marker} #.wav", f"`touch {marker}`.wav"]
    manifest = _csv(tmp_path / "sub" / "data.csv", "path,label\na.wav,x\n" + "".join(f'"{p}",y\n' for p in evil))
    monkeypatch.chdir(ROOT)
    man = from_csv(manifest)
    assert man.paths[0] == str(tmp_path / "sub" / "a.wav")
    r = run_cli("train", manifest, "--out", tmp_path / "run", *TINY, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("file not found") == 3, r.stderr
    assert not marker.exists()


def test_label_with_a_comma_round_trips(tmp_path):
    write(tmp_path / "a.wav", tone(300, 0.3))
    manifest = _csv(tmp_path / "data.csv", 'path,label\na.wav,"big, loud"\n')
    man = from_csv(manifest)
    assert man.labels == ["big, loud"]
    man.to_csv(tmp_path / "again.csv", relative_to=tmp_path)
    assert from_csv(tmp_path / "again.csv").labels == ["big, loud"]


def test_a_class_with_one_example_stays_in_training(tmp_path):
    """A stratified split cannot place it in val or test: it stays in train, with a warning; also when groups
    would have put its only group in a held-out split."""
    labels = ["a"] * 20 + ["b"] * 20 + ["solo"]
    paths = [f"/x/{i}.wav" for i in range(41)]
    notes: list[str] = []
    for groups in (None, [f"g{i % 5}" for i in range(40)] + ["g_solo"]):
        for seed in range(20):
            out = assign_splits(Manifest(paths, labels, groups=groups), seed=seed, warn=notes.append)
            assert out.splits[-1] == "train", (groups is not None, seed)
    assert notes and all("class 'solo' has 1 example(s)" in n for n in notes)


def test_symlinks_loop_and_cross_class_links(tmp_path):
    write(tmp_path / "d" / "a" / "x.wav", tone(300, 0.3))
    write(tmp_path / "d" / "b" / "y.wav", tone(3000, 0.3))
    os.symlink(".", tmp_path / "d" / "a" / "self")  # a/self -> a: a cycle
    man = from_folder(tmp_path / "d")
    assert sorted(Path(p).name for p in man.paths) == ["x.wav", "y.wav"]
    os.symlink(tmp_path / "d" / "b", tmp_path / "d" / "a" / "to_b")  # b's files reachable from a: label ambiguous
    with pytest.raises(SpecrnnError, match="reachable from two class folders"):
        from_folder(tmp_path / "d")


def test_unreadable_subfolder_stops_with_its_name(tmp_path):
    _, preexec, reason = unreadable_file(tmp_path)
    if reason:
        pytest.skip(reason)
    write(tmp_path / "d" / "a" / "x.wav", tone(300, 0.3))
    write(tmp_path / "d" / "b" / "locked" / "y.wav", tone(3000, 0.3))
    os.chmod(tmp_path / "d" / "b" / "locked", 0)
    code = ("import sys\nfrom specrnn.data.manifest import from_folder\nfrom specrnn.errors import SpecrnnError\n"
            "try:\n    from_folder(sys.argv[1])\nexcept SpecrnnError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True, preexec_fn=preexec)
    os.chmod(tmp_path / "d" / "b" / "locked", 0o755)
    assert f"{tmp_path / 'd' / 'b' / 'locked'}: cannot list this folder" in r.stdout, r.stdout + r.stderr


def test_a_label_only_in_val_or_test_stops(tmp_path, capsys):
    rows = ["path,label,split"]
    for label, f in (("a", 300), ("b", 3000)):
        for i in range(4):
            write(tmp_path / f"{label}{i}.wav", tone(f + 10 * i, 0.3, seed=i))
            rows.append(f"{label}{i}.wav,{label},{('train', 'train', 'val', 'test')[i]}")
    write(tmp_path / "z.wav", tone(1000, 0.3))
    rows.append("z.wav,z,test")
    rc, _, err = main_cli(capsys, "train", _csv(tmp_path / "d.csv", "\n".join(rows) + "\n"), "--out", tmp_path / "run", *TINY)
    assert rc == 2 and "label(s) 'z' appear in val/test but not in the training split" in err, err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_noise_folder_that_is_not_there_names_the_option(tmp_path, capsys):
    for label, f in (("a", 300), ("b", 3000)):
        for i in range(6):
            write(tmp_path / "d" / label / f"{i}.wav", tone(f + 10 * i, 0.3, seed=i))
    rc, _, err = main_cli(capsys, "train", tmp_path / "d", "--out", tmp_path / "run", *TINY, "--set",
                          f"augment.noise_dir={tmp_path / 'nowhere'}")
    assert rc == 2 and f"augment.noise_dir {tmp_path / 'nowhere'}: no such folder" in err, err
    noise = tmp_path / "noise"
    noise.mkdir()
    (noise / "broken.wav").write_bytes(b"RIFF\x00\x01")
    for on_error in ("stop", "skip"):  # no usable noise: an error either way, never a training without its noise
        rc, _, err = main_cli(capsys, "train", tmp_path / "d", "--out", tmp_path / f"run-{on_error}", *TINY,
                              "--on-error", on_error, "--set", f"augment.noise_dir={noise}")
        assert rc == 2 and "broken.wav" in err and "none of its files is usable" in err, err
    write(noise / "hum.wav", tone(50, 1.0))
    rc, _, err = main_cli(capsys, "train", tmp_path / "d", "--out", tmp_path / "run2", *TINY, "--set", f"augment.noise_dir={noise}")
    assert rc == 2 and "broken.wav" in err and "--on-error skip" in err, err  # stop (the default) stops on any bad file


def test_a_diverging_training_stops_with_an_error_and_keeps_what_it_had(tmp_path):
    for label, f in (("a", 300), ("b", 3000)):
        for i in range(10):
            write(tmp_path / "d" / label / f"{i}.wav", tone(f + 10 * i, 0.3, seed=i))
    r = run_cli("train", tmp_path / "d", "--out", tmp_path / "run", *TINY, "--max-epochs", 3, "--set", "train.lr=1e30")
    assert r.returncode == 2 and "training diverged in epoch" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()  # not reported as a finished run


def test_every_case_is_in_the_documented_table():
    doc = (ROOT / "docs" / "robustness.md").read_text(encoding="utf-8")
    for name in [*UNUSABLE, *USABLE, *MANIFEST_ERRORS, "broken_link.wav", "unreadable.wav", "symlink loop",
                 "class with one example", "empty class folder", "label with a comma"]:
        assert f"`{name}`" in doc or name in doc, name
