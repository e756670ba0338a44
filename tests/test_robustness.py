"""Interrupted runs, determinism, corrupt and untrusted files, atomic writes: a training killed with SIGKILL at
any point resumes to the same final weights; same seed -> same metrics; corrupt or crafted model files and
checkpoints are refused with a clear error and never run code."""
from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from specrnn.errors import SpecrnnError
from specrnn.files import atomic_write_bytes, load_checkpoint_file, load_model_file, save_model

from .conftest import ROOT, onnx_export_skip_reason, tone, write
from .test_bad_inputs import TINY, main_cli, run_cli

EPOCHS = 6
RANDOM = ["--set", "augment.gain_db=3", "--set", "augment.time_shift=0.1", "--set", "augment.mixup=0.2"]  # more RNG
TIMING = {"train_seconds", "total_seconds"}

# The real CLI, SIGKILLing itself at a chosen point of training: batch:EPOCH:BATCH (after that training batch) or
# val:EPOCH (after that epoch's model.pt and history.csv are written, before its checkpoint is).
KILLER = """
import os, signal, sys
import lightning.pytorch as L
import specrnn.training.trainer as T

spec = os.environ["KILL_AT"]

class KillAt(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if spec == f"batch:{trainer.current_epoch}:{batch_idx}":
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_end(self, trainer, pl_module):
        if spec == f"val:{trainer.current_epoch}":
            os.kill(os.getpid(), signal.SIGKILL)

make = T.make_trainer
T.make_trainer = lambda cfg, run_dir, callbacks: make(cfg, run_dir, [*callbacks, KillAt()])
from specrnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def killed_at(point: str, *args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", KILLER, *map(str, args)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, KILL_AT=point))
    assert r.returncode == -signal.SIGKILL, f"not killed at {point}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def ckpt_epoch(run: Path) -> int:
    return int(load_checkpoint_file(run / "checkpoints" / "last.ckpt")["epoch"])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("data") / "tones"
    for label, lo, hi in (("low", 200, 400), ("high", 2000, 4000)):
        for i in range(24):
            write(root / label / f"{label}_{i}.wav", tone(rng.uniform(lo, hi), rng.uniform(0.2, 0.8), seed=i))
    return root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """An uninterrupted run (dropout, SpecAugment, gain, shift and mixup on, so the RNG matters)."""
    run = tmp_path_factory.mktemp("runs") / "reference"
    r = run_cli("train", data, "--out", run, "--max-epochs", EPOCHS, *TINY, *RANDOM)
    assert r.returncode == 0, r.stdout + r.stderr
    return run


def assert_same_run(a: Path, b: Path, epochs: int = EPOCHS) -> None:
    """Bit-identical best and final weights, optimiser state, history and metrics (timings aside)."""
    for name in ("model.pt", "checkpoints/last.ckpt"):
        x = torch.load(a / name, weights_only=True)
        y = torch.load(b / name, weights_only=True)
        assert x["state_dict"].keys() == y["state_dict"].keys()
        for k in x["state_dict"]:
            assert torch.equal(x["state_dict"][k], y["state_dict"][k]), (name, k)
    opt_a = torch.load(a / "checkpoints/last.ckpt", weights_only=True)["optimizer_states"][0]["state"]
    opt_b = torch.load(b / "checkpoints/last.ckpt", weights_only=True)["optimizer_states"][0]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)

    def history(run: Path) -> list[dict]:
        with open(run / "history.csv") as f:
            return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]

    assert history(a) == history(b) and len(history(a)) == epochs

    def metrics(run: Path) -> dict:
        return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k not in TIMING}

    assert metrics(a) == metrics(b)


def test_same_seed_same_data_same_config_gives_identical_runs(data, reference, tmp_path):
    run = tmp_path / "again"
    r = run_cli("train", data, "--out", run, "--max-epochs", EPOCHS, *TINY, *RANDOM)
    assert r.returncode == 0, r.stderr
    assert_same_run(reference, run)


def test_sigkill_at_any_point_then_resume_gives_the_same_final_weights(data, reference, tmp_path):
    run = tmp_path / "killed"
    # 1. killed during the first epoch: no checkpoint yet
    killed_at("batch:0:1", "train", data, "--out", run, "--max-epochs", EPOCHS, *TINY, *RANDOM)
    assert (run / "config.yaml").is_file() and not (run / "checkpoints" / "last.ckpt").exists()
    # 2. resumed from the start, killed after epoch 2's model.pt and history.csv, before its checkpoint
    r = killed_at("val:2", "train", "--resume", "--out", run)
    assert "no checkpoint (interrupted during its first epoch): training it from the start" in r.stdout
    assert ckpt_epoch(run) == 1 and len((run / "history.csv").read_text().splitlines()) == 1 + 3
    # 3. resumed after two epochs (epoch 2's half-saved work is redone), killed in the middle of epoch 3
    r = killed_at("batch:3:1", "train", "--resume", "--out", run)
    assert "after epoch 2" in r.stdout and ckpt_epoch(run) == 2
    # 4. killed from outside, right after the next checkpoint lands (wherever the run is by then)
    before = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    proc = subprocess.Popen([sys.executable, "-m", "specrnn", "train", "--resume", "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # a stall fails the test instead of hanging the suite
    while proc.poll() is None and (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, "the resumed run wrote no checkpoint in 300 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # 5. resumed to the end
    r = run_cli("train", "--resume", "--out", run)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_run(reference, run)
    # train_seconds counts the epochs trained before the last resume too, not only the resumed part
    with open(run / "history.csv") as f:
        epoch_seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(f)]
    m = json.loads((run / "metrics.json").read_text())
    assert m["total_seconds"] >= m["train_seconds"] >= sum(epoch_seconds)


def validation_loss(run: Path) -> float:
    """Mean cross-entropy of run/model.pt on the run's own validation rows, recomputed from the audio."""
    from specrnn.inference import Predictor

    with open(run / "split.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
    preds = Predictor.load(run, device="cpu").predict([r["path"] for r in rows])
    return float(np.mean([-np.log(p.probabilities[r["label"]]) for p, r in zip(preds, rows)]))


def test_weight_averaging_keeps_the_validated_average_and_resumes_exactly(data, tmp_path):
    # a constant learning rate keeps the weights moving, so the average stays apart from the last weights
    args = ["--max-epochs", EPOCHS, *TINY, *RANDOM, "--set", "train.schedule=constant", "--set", "train.lr=0.01"]
    plain, ema = tmp_path / "plain", tmp_path / "ema"
    for run, extra in ((plain, []), (ema, ["--set", "train.ema=0.9"])):
        r = run_cli("train", data, "--out", run, *args, *extra)
        assert r.returncode == 0, r.stdout + r.stderr
    meta = load_model_file(ema)[1]
    # model.pt holds the weights that were validated (the average), not the last trained ones
    assert validation_loss(ema) == pytest.approx(meta["val_loss"], rel=1e-4, abs=1e-5)
    x, y = torch.load(plain / "model.pt", weights_only=True), torch.load(ema / "model.pt", weights_only=True)
    assert any(not torch.equal(x["state_dict"][k], y["state_dict"][k]) for k in x["state_dict"])
    # killed after epoch 2, resumed: the same average and the same run as without the interruption
    killed = tmp_path / "killed"
    killed_at("val:2", "train", data, "--out", killed, *args, "--set", "train.ema=0.9")
    r = run_cli("train", "--resume", "--out", killed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_run(ema, killed)


def test_resume_after_early_stopping_does_not_train_on():
    from types import SimpleNamespace

    from specrnn.training.callbacks import BestModel

    best = BestModel(Path("unused"), {}, patience=1)
    best.load_state_dict({"best": [1.0, -0.1], "best_epoch": 2, "bad_epochs": 1, "stopped": True})
    trainer = SimpleNamespace(should_stop=False)
    best.on_train_start(trainer, None)
    assert trainer.should_stop
    assert BestModel(Path("unused"), {}, patience=1).state_dict()["stopped"] is False


def test_resume_of_a_folder_that_is_not_a_started_run_says_why(data, tmp_path, capsys):
    rc, _, err = main_cli(capsys, "train", "--resume", "--out", tmp_path / "nothing")
    assert rc == 2 and "nothing to resume (no config.yaml)" in err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("seed: 0\n")  # killed between config.yaml and run.json
    rc, _, err = main_cli(capsys, "train", "--resume", "--out", tmp_path / "half")
    assert rc == 2 and "interrupted before it was set up" in err and "--overwrite" in err
    (tmp_path / "half" / "mine.txt").write_text("a user's file")  # then it is not only a half-made run: left alone
    rc, _, err = main_cli(capsys, "train", data, "--out", tmp_path / "half", "--overwrite", *TINY, "--max-epochs", 1)
    assert rc == 2 and "not a specrnn run folder" in err
    (tmp_path / "half" / "mine.txt").unlink()
    rc, _, err = main_cli(capsys, "train", data, "--out", tmp_path / "half", "--overwrite", *TINY, "--max-epochs", 1)
    assert rc == 0 and (tmp_path / "half" / "run.json").is_file(), err  # the advice given above works


def test_resume_refuses_data_that_changed_since_the_run_started(reference, tmp_path, capsys):
    run = shutil.copytree(reference, tmp_path / "run")
    with open(run / "split.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, first = rows[0], rows[1]
    first[header.index("split")] = "val" if first[header.index("split")] != "val" else "train"
    with open(run / "split.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    rc, _, err = main_cli(capsys, "train", "--resume", "--out", run)
    assert rc == 2 and "the data changed since" in err and Path(first[0]).name in err, err


# ---------------------------------------------------------------- corrupt files
def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor inside a torch zip file (its structure stays valid)."""
    import struct
    import zipfile

    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        entry = max(z.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", blob[entry.header_offset + 26 : entry.header_offset + 30])
    blob[entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2] ^= 0x10
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "index"])
def test_corrupt_feature_store_shard_is_reported_and_rebuilt(tmp_path, capsys, damage):
    from specrnn.config import FeatureConfig
    from specrnn.data.dataset import compute_features
    from specrnn.data.store import FeatureStore

    paths = [str(write(tmp_path / f"{i}.wav", tone(300 + 50 * i, 0.3))) for i in range(2)]
    first = [np.array(f) for f in compute_features(paths, FeatureConfig(), str(tmp_path / "cache"))[0]]
    (shard,) = FeatureStore(str(tmp_path / "cache"), FeatureConfig()).dir.glob("*.f32")
    blob = shard.read_bytes()
    if damage == "index":
        shard.with_suffix(".json").write_text("{not json")
    else:
        shard.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else blob[:-9] + bytes([blob[-9] ^ 1]) + blob[-8:])
    capsys.readouterr()
    again, errors = compute_features(paths, FeatureConfig(), str(tmp_path / "cache"))
    err = capsys.readouterr().err
    why = {"truncated": "bytes where the index says", "flipped": "checksum mismatch", "index": "unreadable index"}[damage]
    assert not errors and f"feature store {shard.with_suffix('')}: " in err and why in err and "computed again" in err
    np.testing.assert_array_equal(again[1], first[1])
    (rebuilt,) = FeatureStore(str(tmp_path / "cache"), FeatureConfig()).dir.glob("*.f32")
    assert rebuilt.read_bytes() == blob  # rebuilt, byte for byte (in a new shard)


def test_checksum_detects_changed_weights_and_meta(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, {"w": torch.arange(6.0)}, {"classes": ["a", "b"]})
    state, meta = load_model_file(path)
    assert torch.equal(state["w"], torch.arange(6.0)) and meta == {"classes": ["a", "b"]}
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["w"][3] = 7.0
    torch.save(blob, path)
    with pytest.raises(SpecrnnError, match="checksum mismatch"):
        load_model_file(path)


# ---------------------------------------------------------------- untrusted files
EVIL = """
import os, sys, torch

class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))

kind, out = sys.argv[1], sys.argv[3]
if kind == "model":
    torch.save({"format": "specrnn-model", "version": 1, "state_dict": {}, "meta": "{}", "x": Evil()}, out)
else:
    torch.save({"state_dict": {}, "epoch": 3, "callbacks": {"x": Evil()}}, out)
"""


def craft(kind: str, out: Path, marker: Path) -> None:
    """Write a model file or checkpoint whose unpickling runs `touch MARKER`; check the payload is live."""
    subprocess.run([sys.executable, "-c", EVIL, kind, str(marker), str(out)], check=True)
    live = marker.with_name(marker.name + ".live")
    probe = subprocess.run([sys.executable, "-c", "import sys, torch; torch.load(sys.argv[1], weights_only=False)",
                            str(out)], capture_output=True)
    assert probe.returncode == 0 and marker.exists(), "the crafted file does not run code even when loaded unsafely"
    marker.rename(live)


def test_crafted_model_file_is_refused_without_running_code(reference, tmp_path):
    run = _copy(reference, tmp_path / "run")
    marker = tmp_path / "PWNED"
    craft("model", run / "model.pt", marker)
    r = run_cli("predict", run, write(tmp_path / "a.wav", tone(300)))
    assert r.returncode == 2 and "refused to load" in r.stderr and "Traceback" not in r.stderr, r.stderr
    with pytest.raises(SpecrnnError, match="refused to load"):
        load_model_file(run)
    assert not marker.exists()


def test_crafted_checkpoint_is_refused_on_resume_without_running_code(reference, tmp_path):
    run = _copy(reference, tmp_path / "run")
    marker = tmp_path / "PWNED"
    craft("checkpoint", run / "checkpoints" / "last.ckpt", marker)
    r = run_cli("train", "--resume", "--out", run)
    assert r.returncode == 2 and "refused to load" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not marker.exists()


# ---------------------------------------------------------------- atomic writes
WRITER = """
import sys
from specrnn.files import atomic_write_bytes
path, n = sys.argv[1], int(sys.argv[2])
i = 0
while True:
    atomic_write_bytes(path, bytes([65 + i % 2]) * n)
    i += 1
"""


def test_a_file_killed_while_being_rewritten_is_old_or_new_never_half(tmp_path):
    path, n = tmp_path / "metrics.json", 4_000_000
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)])
    try:
        seen = set()
        deadline = time.monotonic() + 120
        while len(seen) < 4 and proc.poll() is None:  # several complete rewrites
            assert time.monotonic() < deadline, f"only {len(seen)} rewrites seen in 120 s"
            if path.exists():
                seen.add(path.stat().st_mtime_ns)
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    blob = path.read_bytes()
    assert len(blob) == n and blob in (b"A" * n, b"B" * n)


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "history.csv"
    atomic_write_bytes(path, b"old\n")
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~old_umask  # like open(), not mkstemp's 0600

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new\n" * 1000)
    assert path.read_bytes() == b"old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]


def _plain_writes(source: str) -> list[tuple[int, str]]:
    """(line, code) of calls that write a file in place: open(..., 'w'), Path.write_text/bytes, and
    savefig/np.save/torch.save/sf.write straight to a path (into an in-memory buffer or a temp file is fine)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in ("open", "write_text", "write_bytes", "savefig", "save", "save_model", "write"):
            continue
        code = ast.get_source_segment(source, node) or ""
        args = [*node.args, *(k.value for k in node.keywords)]
        into_buffer = any(isinstance(a, ast.Name) and ("buf" in a.id or "tmp" in a.id) for a in args)
        if name == "open":
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax"):
                found.append((node.lineno, code))
        elif name in ("write_text", "write_bytes"):
            found.append((node.lineno, code))
        elif name in ("savefig", "save", "save_model", "write") and not into_buffer and code.split("(")[0] in (
                "fig.savefig", "plt.savefig", "np.save", "numpy.save", "torch.save", "sf.write", "soundfile.write",
                "onnx.save", "onnx.save_model"):
            found.append((node.lineno, code))
    return found


def test_the_package_writes_files_only_atomically():
    """Every writer goes through run.atomic_write_* (streamed .log files and the demo's done-marker aside)."""
    offenders = []
    for path in sorted((ROOT / "src" / "specrnn").rglob("*.py")):
        for line, code in _plain_writes(path.read_text(encoding="utf-8")):
            if ".log" not in code and not code.startswith("done.write_text"):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {code}")
    assert not offenders, "\n".join(offenders)


def test_the_atomic_write_check_finds_plain_writes():
    code = ("open(p, 'w')\nPath(p).write_text('x')\ntorch.save(obj, path)\ntorch.save(obj, buf)\nfig.savefig(buf)\n"
            "onnx.save(proto, str(path))\nopen(p)\n")
    assert [line for line, _ in _plain_writes(code)] == [1, 2, 3, 6]


@pytest.mark.parametrize("command", ["train", "cv"])
def test_ctrl_c_says_what_was_kept_and_how_to_resume(data, tmp_path, command):
    out = tmp_path / "run"
    # min_epochs: early stopping cannot end the run before the signal comes
    args = [sys.executable, "-m", "specrnn", command, str(data), "--out", str(out), "--set", "train.max_epochs=200",
            "--set", "train.min_epochs=200", *TINY]
    if command == "cv":
        args += ["--folds", "2", "--jobs", "1"]
    # The child gets Ctrl-C's default action even when the tests run as a background job of a non-interactive
    # shell (`.ci/run &`), which starts them with SIGINT ignored, a disposition every child inherits.
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.rglob("history.csv")) and p.poll() is None:
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    o, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, (err, o[-2000:])
    if command == "train":
        assert f"training interrupted; resume with: specrnn train --resume --out {out}" in err
    else:
        assert "interrupted; finished runs are kept: rerun the same command to resume" in err


def test_single_file_outputs_never_replace_a_users_file(reference, data, tmp_path, capsys):
    """export, manifest and report write one file each: a wrong suffix, a missing folder and a file that specrnn
    did not write are refused before any work (the run's own model.pt included); their own files are rewritten."""
    if onnx_export_skip_reason():
        pytest.skip(onnx_export_skip_reason())
    run = _copy(reference, tmp_path / "run")
    model = (run / "model.pt").read_bytes()
    mine = {name: tmp_path / name for name in ("notes.onnx", "notes.csv", "notes.html", "song.wav")}
    for path in mine.values():
        path.write_bytes(b"a user's own file")
    tries = {
        ("export", run, "--out", run / "model.pt"): "needs a .onnx name",
        ("export", run, "--out", mine["notes.onnx"]): "specrnn did not write",
        ("export", run, "--out", tmp_path / "nosuch" / "m.onnx"): "no such folder",
        ("manifest", data, "--pattern", "{label}/*", "--out", mine["song.wav"]): "needs a .csv name",
        ("manifest", data, "--pattern", "{label}/*", "--out", mine["notes.csv"]): "specrnn did not write",
        ("report", run, "--out", mine["notes.html"]): "specrnn did not write",
    }
    for args, message in tries.items():
        rc, _, err = main_cli(capsys, *args)
        assert rc == 2 and message in err, (args, err)
    assert (run / "model.pt").read_bytes() == model
    assert all(p.read_bytes() == b"a user's own file" for p in mine.values())
    for args in (("export", run, "--out", tmp_path / "m.onnx"), ("manifest", data, "--pattern", "{label}/*", "--out",
                 tmp_path / "m.csv"), ("report", run, "--out", tmp_path / "r.html")):
        for _ in range(2):  # the second time over its own file
            rc, _, err = main_cli(capsys, *args)
            assert rc == 0, err
