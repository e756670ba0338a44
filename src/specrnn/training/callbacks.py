"""Callbacks that write the run folder and make resume exact: the best model (early stopping), history.csv,
per-epoch log lines, RNG reseeding per step, the resume checkpoint, checksummed atomic checkpoint files."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, EMAWeightAveraging, WeightAveraging
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..config import Config
from ..files import MODEL_FILE, atomic_write_bytes, atomic_write_text, checkpoint_bytes, load_checkpoint_file, save_model

class BestModel(Callback):
    """Keep the model with the best validation accuracy (ties: lower loss) as model.pt; stop after
    `patience` epochs without improvement. Test data never reaches this callback. With weight averaging, the
    averaged weights are the ones validated, so they are the ones kept."""

    def __init__(self, run_dir: Path, meta: dict, patience: int, min_epochs: int = 1, averaging: WeightAveraging | None = None):
        self.path, self.meta, self.patience, self.min_epochs = Path(run_dir) / MODEL_FILE, meta, patience, min_epochs
        self.averaging = averaging
        self.best: tuple[float, float] | None = None
        self.best_epoch = -1
        self.bad_epochs = 0
        self.stopped = False

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or "val_acc" not in trainer.callback_metrics:
            return
        score = (float(trainer.callback_metrics["val_acc"]), -float(trainer.callback_metrics["val_loss"]))
        if self.best is None or score > self.best:
            self.best, self.best_epoch, self.bad_epochs = score, trainer.current_epoch, 0
            if trainer.is_global_zero:
                meta = dict(self.meta, epoch=trainer.current_epoch, val_accuracy=score[0], val_loss=-score[1])
                save_model(self.path, self._weights(pl_module), meta)
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience and trainer.current_epoch + 1 >= self.min_epochs:
                trainer.should_stop = self.stopped = True

    def _weights(self, pl_module) -> dict:
        if self.averaging is None:
            return pl_module.model.state_dict()
        # Lightning swaps the averaged weights in for validation and back out before on_validation_end runs
        return self.averaging._average_model.module.model.state_dict()

    def on_train_start(self, trainer, pl_module):
        if self.stopped:  # resumed after early stopping had ended the run: do not train on
            trainer.should_stop = True

    def state_dict(self):
        return {"best": list(self.best) if self.best else None, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "stopped": self.stopped}

    def load_state_dict(self, state):
        self.best = tuple(state["best"]) if state["best"] else None
        self.best_epoch, self.bad_epochs = state["best_epoch"], state["bad_epochs"]
        self.stopped = bool(state.get("stopped", False))


class History(Callback):
    """history.csv, rewritten atomically after every epoch: epoch, losses, accuracy, learning rate, seconds."""

    FIELDS = ["epoch", "train_loss", "val_loss", "val_acc", "lr", "epoch_seconds"]

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "history.csv"
        self.rows: list[dict] = []
        self.seconds_before_resume = 0.0  # the epochs a resumed run had already trained, for its train_seconds

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}  # 1-based, as in the summary ("best epoch 3 of 20")
        for k in self.FIELDS[1:]:
            if k in m:
                row[k] = round(float(m[k]), 6)
        row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero:
            buf = io.StringIO()
            w = csv.DictWriter(buf, self.FIELDS, lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows)
            atomic_write_text(self.path, buf.getvalue())

    def state_dict(self):
        return {"rows": self.rows}

    def load_state_dict(self, state):
        self.rows = list(state["rows"])
        self.seconds_before_resume = sum(float(r.get("epoch_seconds", 0.0)) for r in self.rows)


class EpochLog(Callback):
    """One line per epoch (train and validation loss, validation accuracy, seconds), for runs whose output is not a
    terminal: there Lightning's progress bar is off, and a log or pipe would otherwise show nothing until the end."""

    def __init__(self, log):
        self.write = log

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        parts = [f"train loss {m['train_loss']:.4f}" if "train_loss" in m else None,
                 f"val loss {m['val_loss']:.4f}" if "val_loss" in m else None,
                 f"val accuracy {100 * m['val_acc']:.2f}%" if "val_acc" in m else None]
        seconds = f" ({m['epoch_seconds']:.1f} s)" if "epoch_seconds" in m else ""
        self.write(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {', '.join(p for p in parts if p)}{seconds}")


class ExactResume(Callback):
    """What makes a resumed run end with the same weights as an uninterrupted one, beyond Lightning's own state:
    - the bucket sampler's epoch (Lightning calls set_epoch only on `batch_sampler.sampler`, which ours lacks);
    - the RNG behind dropout and augmentation, reseeded before every step from (seed, rank, step), so it does not
      depend on where a run was interrupted or on how many random numbers Lightning drew in between."""

    def __init__(self, seed: int):
        self.seed = seed

    def _set_epoch(self, trainer) -> None:
        sampler = getattr(trainer.train_dataloader, "batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(trainer.current_epoch)

    def on_train_start(self, trainer, pl_module):
        self._set_epoch(trainer)

    def on_train_epoch_start(self, trainer, pl_module):
        self._set_epoch(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        seed_step(self.seed, trainer.global_rank, trainer.global_step)


def seed_step(seed: int, rank: int, step: int) -> None:
    """Seed torch, numpy and random from (seed, rank, step): independent streams per step and per rank."""
    import random

    import numpy as np

    state = np.random.SeedSequence([seed % 2**64, rank, step]).generate_state(2)
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))
    np.random.seed(int(state[0]))
    random.seed(int(state[1]))


class LastCheckpoint(Checkpoint):
    """checkpoints/last.ckpt after every validation, for `--resume`. Lightning runs Checkpoint callbacks last, so
    the saved state includes this epoch's History and BestModel updates. (ModelCheckpoint(save_top_k=0,
    save_last=True) only writes when training ends in Lightning 2.6, which leaves nothing to resume.)"""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            trainer.save_checkpoint(self.path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints with a checksum, written to a temp file and renamed; loaded without running code,
    verified, and refused with a SpecrnnError naming the file when corrupt, truncated or unsafe."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_write_bytes(path, checkpoint_bytes(checkpoint))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint_file(path)


def weight_averaging(cfg: Config) -> WeightAveraging | None:
    """Lightning's exponential moving average of the weights, updated after every optimiser step (train.ema)."""
    return EMAWeightAveraging(decay=cfg.train.ema) if cfg.train.ema > 0 else None
