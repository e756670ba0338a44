"""The run folder's lifecycle: create a new one (refusing to wipe what specrnn did not make), reuse or overwrite
a finished one, resume an interrupted one with its own data and config, and rejoin it from a DDP worker process.

A run folder holds config.yaml (fully resolved), run.json (data, date, version, seeds), split.csv, model.pt and,
for people, metrics.json, history.csv and plots. Writes go through `files` (temp file, then rename).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import Config, config_from_dict, load_config
from .errors import SpecrnnError
from .files import CHECKPOINT_FILE, MODEL_FILE, atomic_write_text, load_checkpoint_file, write_json

SPLIT_FILE = "split.csv"
RUN_DIR_ENV = "SPECRNN_RUN_DIR"


def version() -> str:
    from . import __version__

    return __version__


def ddp_worker() -> bool:
    """True in the extra processes of a multi-process (DDP) run: local rank > 0 or another node."""
    return RUN_DIR_ENV in os.environ and (int(os.environ.get("LOCAL_RANK", 0)) > 0 or int(os.environ.get("NODE_RANK", 0)) > 0)


def external_launch() -> tuple[int, str | None]:
    """(global rank, launch id) when torchrun or SLURM (srun) started every process of the run, else (0, None).
    Rank 0 sets the run folder up and writes the launch id in run.json; the other ranks wait for it."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return int(os.environ.get("RANK", 0)), f"torchrun:{os.environ['TORCHELASTIC_RUN_ID']}"
    if int(os.environ.get("SLURM_NTASKS", 1)) > 1 and "SLURM_JOB_ID" in os.environ:
        return int(os.environ.get("SLURM_PROCID", 0)), f"slurm:{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', 0)}"
    return 0, None


def join_launch(run_dir: Path, launch: str, timeout: float = 1800.0) -> RunStart:
    """A rank > 0 of an external launch: the run folder rank 0 set up for this launch, once it is there."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        if info.get("launch") == launch:
            cfg_dict, info = read_run_info(run_dir)
            os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
            return RunStart(run_dir, config_from_dict(cfg_dict), info["data"], bool(info.get("launch_resume")),
                            info.get("seeds") or None)
        time.sleep(0.5)
    raise SpecrnnError(f"{run_dir}: rank 0 of this launch ({launch}) did not set the run folder up within "
                       f"{timeout:.0f} s; every node must see the same --out folder (a shared file system)")


@dataclass
class RunStart:
    """A run folder ready to train into: its config, its data (an absolute path), whether it resumes, and the seeds
    of a `train --seeds` run (None for one run)."""

    run_dir: Path
    cfg: Config
    data: str
    resume: bool
    seeds: list[int] | None


def open_run(data=None, out=None, config=None, overrides=None, resume: bool = False, overwrite: bool = False,
             seeds: list[int] | None = None, log=print) -> RunStart:
    """Set up (or, with `resume`, read back) the run folder `out` (default runs/run-DATE-TIME); DDP workers join the
    folder rank 0 set up. Bad DATA or a folder that must not be touched fail here, before anything is written."""
    rank, launch = external_launch()
    if launch and out is None:
        raise SpecrnnError("a run started by torchrun or srun needs --out: every process must train into the same folder")
    run_dir = Path(out) if out else Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    if launch and rank > 0:
        return join_launch(run_dir, launch)
    if ddp_worker():  # a process Lightning's DDP launcher started: join the run folder rank 0 has set up
        run_dir = Path(os.environ[RUN_DIR_ENV])
        cfg_dict, info = read_run_info(run_dir)
        return RunStart(run_dir, config_from_dict(cfg_dict), info["data"], False, None)
    if resume:
        given = [name for name, v in (("DATA", data), ("--config", config), ("--set/--on-error/--max-epochs", overrides),
                                      ("--overwrite", overwrite), ("--seeds", seeds)) if v]
        if given:
            raise SpecrnnError(f"--resume continues a run with the data and config it started with; {', '.join(given)} "
                               "cannot change it (give only --resume --out RUN, or start a new run)")
        cfg_dict, info = read_run_info(run_dir)
        start = RunStart(run_dir, config_from_dict(cfg_dict), info["data"], True, info.get("seeds") or None)
        if start.seeds:
            log(f"resuming {run_dir}: seeds {', '.join(map(str, start.seeds))}")
        elif (run_dir / CHECKPOINT_FILE).exists():  # corrupt, truncated or unsafe: a clear error before any work
            log(f"resuming {run_dir} after epoch {load_checkpoint_file(run_dir / CHECKPOINT_FILE)['epoch'] + 1}")
        else:
            log(f"{run_dir} has no checkpoint (interrupted during its first epoch): training it from the start")
        if launch:  # the other ranks of this launch resume with rank 0
            write_json(run_dir / "run.json", {**info, "launch": launch, "launch_resume": True})
        return start
    if config is not None:
        load_config(config, overrides)  # a bad config fails before the data is read
    if data is None:
        from .demo import make_demo

        data = make_demo()
        log(f"no DATA given: using the built-in demo data set (8 synthetic sound-event classes) in {data}")
    data = str(Path(data).resolve())
    from .data.dataset import check_groups
    from .data.manifest import load_manifest
    from .recipe import resolve

    man = load_manifest(data)
    cfg, recipe = resolve(man, config, overrides, log)  # no --config: settings chosen from the data, --set winning
    check_groups(man, cfg)  # fail on bad DATA before anything is written
    _clear(run_dir, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in recipe)  # the recipe's choices and reasons, above the resolved config
    atomic_write_text(run_dir / "config.yaml", header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    info = {"data": data, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "version": version(),
            **({"launch": launch} if launch else {})}
    write_json(run_dir / "run.json", {**info, "seeds": list(seeds)} if seeds else info)
    return RunStart(run_dir, cfg, data, False, list(seeds) if seeds else None)


def _clear(run_dir: Path, overwrite: bool) -> None:
    """Empty a run folder for a new run: only one specrnn made, and a trained one only with `overwrite`."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SpecrnnError(f"--out {run_dir}: a file is there, not a folder; choose another --out")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not made_by_specrnn(run_dir):
            # only folders specrnn made are ever deleted: --out . or --out ~ must not wipe anything
            raise SpecrnnError(f"--out {run_dir}: this folder holds files and is not a specrnn run folder; "
                               "choose a new or empty folder")
        trained = any((d / p).exists() for d in [run_dir, *run_dir.glob("seeds/seed-*")] for p in (MODEL_FILE, CHECKPOINT_FILE))
        if trained and not overwrite:
            raise SpecrnnError(f"{run_dir} already holds a trained run: choose another --out, --resume it, or --overwrite")
        shutil.rmtree(run_dir)  # a run folder (finished with --overwrite, or stopped before training) is reused


def made_by_specrnn(run_dir: Path) -> bool:
    """A run folder (config.yaml and run.json), or one killed while it was being set up: nothing in it but
    config.yaml and its temp file. Only such folders are ever emptied for a new run."""
    if (run_dir / "config.yaml").is_file() and (run_dir / "run.json").is_file():
        return True
    return all(p.name == "config.yaml" or (p.name.startswith(".config.yaml.") and p.name.endswith(".tmp"))
               for p in run_dir.iterdir())


def check_same_data(start: RunStart, manifest) -> None:
    """A resumed run must see the rows it started with: resuming on other data would silently train something else."""
    if start.resume and (start.run_dir / SPLIT_FILE).is_file():
        from .data.manifest import split_difference

        changed = split_difference(start.run_dir / SPLIT_FILE, manifest)
        if changed:
            raise SpecrnnError(f"{start.data}: the data changed since {start.run_dir} started: {changed}; start a new run instead")


def seen_in_training(run_dir: Path, paths: list[str]) -> dict[str, int]:
    """How many of these files the run trained on or validated on (from its split.csv): scores on them are optimistic."""
    from .data.manifest import load_manifest

    if not (run_dir / SPLIT_FILE).is_file():
        return {}
    own = load_manifest(run_dir / SPLIT_FILE)
    where = {os.path.realpath(p): s for p, s in zip(own.paths, own.splits or [])}
    seen = [where.get(os.path.realpath(p)) for p in paths]
    return {s: seen.count(s) for s in ("train", "val") if seen.count(s)}


def read_run_info(run_dir: str | Path) -> tuple[dict, dict]:
    """(config dict, run.json) of an existing run folder, for --resume; a clear error when either is missing or bad."""
    import yaml

    run_dir = Path(run_dir)
    cfg_path, info_path = run_dir / "config.yaml", run_dir / "run.json"
    if not cfg_path.is_file():
        raise SpecrnnError(f"{run_dir}: nothing to resume (no config.yaml)")
    if not info_path.is_file():
        raise SpecrnnError(f"{run_dir}: the run was interrupted before it was set up (no run.json); "
                           f"start it again with: specrnn train DATA --out {run_dir} --overwrite")
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise SpecrnnError(f"{run_dir}: cannot read the run's config.yaml or run.json ({type(e).__name__}: {e})") from None
    if not isinstance(cfg, dict) or not isinstance(info, dict) or "data" not in info:
        raise SpecrnnError(f"{run_dir}: config.yaml or run.json is not what `specrnn train` writes")
    return cfg, info
