"""Multi-process training through Lightning's DDP (2 CPU processes, gloo): the same run folder, every validation
clip counted exactly once across ranks."""
import json

from .test_cli import cli


def test_ddp_on_two_cpu_processes(tone_folder, tmp_path):
    run = tmp_path / "ddp"
    cli("train", tone_folder, "--out", run, "--max-epochs", 2, "--set", "model.hidden=12", "--set", "model.layers=1",
        "--set", "train.accelerator=cpu", "--set", "train.devices=2", "--set", "train.strategy=ddp")
    m = json.loads((run / "metrics.json").read_text())
    assert m["val"]["n"] + m["test"]["n"] + 38 <= 48 + 2  # the split is the single-process one
    rows = (run / "history.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written once (rank 0)
    assert (run / "model.pt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
