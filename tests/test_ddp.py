"""Multi-process training through Lightning's DDP (2 CPU processes, gloo): the same run folder, every validation
clip counted exactly once across ranks."""
import json
from pathlib import Path

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


def _rank_batches(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from specrnn.data.batching import BucketBatchSampler

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    lengths = [(7 * i) % 23 + 1 for i in range(101)]
    seen = {}
    for train in (True, False):
        s = BucketBatchSampler(lengths, 4, shuffle=train, seed=3)
        s.set_epoch(1)
        seen["train" if train else "eval"] = list(s)  # this rank's batches
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


def test_each_ddp_rank_reads_its_own_clips(tmp_path):
    """Two gloo processes: training batches split the epoch's clips between the ranks (DistributedSampler's
    semantics: disjoint, all covered, equal counts, a few repeated to equalise), and evaluation scores every clip
    exactly once over both. Each rank reads only its own clips' pages of the feature store."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_batches, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2)
    b0, b1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(b0["train"]) == len(b1["train"]) == 13  # 26 batches of the epoch, as many on each rank
    r0, r1 = ({k: [i for b in v for i in b] for k, v in x.items()} for x in (b0, b1))
    assert set(r0["train"]) | set(r1["train"]) == set(range(101))
    repeated = set(r0["train"]) & set(r1["train"])
    assert len(repeated) <= 4  # at most one batch repeats, to give both ranks as many batches
    assert sorted(r0["eval"] + r1["eval"]) == list(range(101))


def test_torchrun_launches_every_process_into_one_run_folder(tone_folder, tmp_path):
    """Multi-node style: torchrun starts both processes (as srun does on SLURM); rank 0 sets the run folder up,
    rank 1 waits for it (run.json names the launch) and joins the same training."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    run = tmp_path / "run"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "specrnn", "train", str(tone_folder), "--out", str(run),
           "--max-epochs", "2", "--set", "model.hidden=8", "--set", "train.accelerator=cpu", "--set", "train.devices=2",
           "--set", "train.strategy=ddp", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cpu x 2 processes" in r.stdout and r.stdout.count("specrnn: gru") == 1  # one summary: rank 0's
    assert json.loads((run / "run.json").read_text())["launch"].startswith("torchrun:")
    assert len((run / "history.csv").read_text().splitlines()) == 3 and (run / "model.pt").is_file()
    r = subprocess.run(cmd[:5] + ["train", "--out", str(run), "--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]  # a finished run resumed under torchrun: both ranks see it done
