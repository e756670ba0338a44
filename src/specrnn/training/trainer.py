"""The Lightning Trainer for a run: devices, precision, gradient clipping, DDP, the resume checkpoint."""
from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback

from ..config import Config
from .callbacks import AtomicCheckpointIO, ExactResume, LastCheckpoint

def precision_for(cfg: Config) -> str:
    if cfg.train.precision != "auto":
        return cfg.train.precision
    if torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def quiet_lightning() -> None:
    """Lightning's banners and tips are noise for our users: keep warnings and errors only."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")


def make_trainer(cfg: Config, run_dir: Path, callbacks: list[Callback]) -> L.Trainer:
    quiet_lightning()
    t = cfg.train
    ckpt = LastCheckpoint(run_dir / "checkpoints" / "last.ckpt")
    return L.Trainer(
        max_epochs=t.max_epochs,
        limit_train_batches=t.steps_per_epoch or 1.0,  # an epoch is then the first N of its shuffled batches
        min_epochs=t.min_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=precision_for(cfg),
        gradient_clip_val=t.grad_clip or None,
        callbacks=[*callbacks, ExactResume(cfg.seed), ckpt],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our length-bucketed sampler shards batches across ranks itself
        deterministic=False,
        default_root_dir=str(run_dir),
    )
