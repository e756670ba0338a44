"""Training with Lightning: the LightningModule holds the science (loss, optimiser, schedule); callbacks
write the run folder (history, best model, early stopping); the Trainer does the engineering (devices,
precision, DDP, gradient clipping, checkpoints for resume)."""
from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, EMAWeightAveraging, WeightAveraging
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .config import Config
from .errors import SpecrnnError
from .models import SpecRNN
from .run import MODEL_FILE, atomic_write_bytes, atomic_write_text, checkpoint_bytes, load_checkpoint_file, save_model
from .tasks import ClassificationTask, CTCTask


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by -scale on the way back (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


class LitClassifier(L.LightningModule):
    def __init__(self, model: SpecRNN, task: ClassificationTask | CTCTask, cfg: Config, steps_per_epoch: int, augment=None,
                 n_groups: int = 0):
        super().__init__()
        self.model, self.task, self.cfg, self.steps_per_epoch = model, task, cfg, steps_per_epoch
        self.augment = augment  # BatchAugment or None: training batches only
        self._val: list[tuple[float, int, int]] = []
        self._train: list[tuple[float, int]] = []
        # speaker-adversarial training: a classifier of the clip's group reads the pooled embedding through gradient
        # reversal, so the encoder learns to hide the speaker while the adversary tries to find it. Not saved.
        self.adversary = None
        if cfg.train.adversary > 0:
            if model.pooling is None:
                raise SpecrnnError("train.adversary needs a clip head (it reads the pooled embedding); this model has frame outputs")
            size = model.pooling.output_size
            self.adversary = torch.nn.Sequential(torch.nn.Linear(size, 128), torch.nn.ReLU(), torch.nn.Linear(128, n_groups))

    def forward(self, features, lengths):
        return self.model(features, lengths)

    def training_step(self, batch, batch_idx):
        if self.augment is not None:
            batch = self.augment(batch)
        if self.adversary is None:
            task_loss = loss = self.task.loss(self.model(batch["features"], batch["lengths"]), batch["targets"])
        else:
            emb = self.model.embed(batch["features"], batch["lengths"])
            task_loss = self.task.loss(self.model.head(emb), batch["targets"])
            adv = self.adversary(_ReverseGradient.apply(emb, self.reversal_scale()))
            loss = task_loss + torch.nn.functional.cross_entropy(adv, batch["groups"])
        self._train.append((task_loss.detach(), batch["targets"].shape[0]))  # history's train_loss: the task's own
        return loss

    def reversal_scale(self) -> float:
        """How strongly the encoder is pushed to hide the group: from 0 up to train.adversary over training, on
        Ganin & Lempitsky's schedule, so the adversary has something to read before the encoder fights it."""
        progress = self.global_step / max(1, self.cfg.train.max_epochs * self.steps_per_epoch)
        return self.cfg.train.adversary * (2 / (1 + math.exp(-10 * progress)) - 1)

    def on_train_epoch_start(self):
        self._train = []
        self._epoch_start = time.perf_counter()

    def validation_step(self, batch, batch_idx):
        out = self.model(batch["features"], batch["lengths"])
        y = batch["targets"]
        loss = self.task.loss(out, y, reduction="sum", smoothing=False)
        self._val.append((loss.detach(), self.task.correct(out, y).detach(), self.task.units(y), y.shape[0]))

    def on_validation_epoch_start(self):
        self._val = []

    def on_validation_epoch_end(self):
        if not self._val:
            return
        # loss per clip (as training reports it); accuracy over the task's units (clips, or CTC's tokens)
        stats = torch.tensor([[float(v[0]), int(v[1]), v[2], v[3]] for v in self._val], dtype=torch.float64,
                             device=self.device).sum(0)
        stats = self.trainer.strategy.reduce(stats, reduce_op="sum") if self.trainer.world_size > 1 else stats
        train_loss = None
        if self._train:  # validation closes each training epoch: record the epoch's training figures here
            n = sum(b for _, b in self._train)
            train_loss = float(sum(float(loss) * b for loss, b in self._train) / n)
        self._check_finite(float(stats[0] / stats[3]), train_loss)
        self.log("val_loss", float(stats[0] / stats[3]))
        self.log("val_acc", float(stats[1] / stats[2]), prog_bar=True)
        if train_loss is not None:
            self.log("train_loss", train_loss, prog_bar=True, sync_dist=True)
        self.log("epoch_seconds", time.perf_counter() - getattr(self, "_epoch_start", time.perf_counter()), sync_dist=True)

    def _check_finite(self, val_loss: float, train_loss: float | None) -> None:
        """A diverged training (a NaN or infinite loss) ends the run with an error before this epoch is kept or
        checkpointed, instead of finishing with a model that outputs NaN."""
        if self.trainer.sanity_checking or (math.isfinite(val_loss) and (train_loss is None or math.isfinite(train_loss))):
            return
        raise SpecrnnError(
            f"training diverged in epoch {self.current_epoch + 1}: training loss {train_loss}, validation loss {val_loss}. "
            "Lower train.lr, set train.grad_clip, or check the augment values; model.pt and last.ckpt keep the last "
            "finite epochs (this run is unfinished)")

    def configure_optimizers(self):
        t = self.cfg.train
        params = [p for p in self.parameters() if p.requires_grad]  # the model's, and the adversary's if any
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # The fused kernel: 3.6 ms instead of 7-10 ms per step for the default model on this CPU. Lightning's mixed
        # precision (the GPU default) refuses to clip the gradients of a fused optimizer, which may unscale them itself.
        mixed = self._trainer is not None and "mixed" in str(self._trainer.precision)
        try:
            opt = torch.optim.AdamW(groups, lr=t.lr, fused=not (mixed and t.grad_clip))
        except (RuntimeError, TypeError, ValueError):
            opt = torch.optim.AdamW(groups, lr=t.lr)
        total = max(1, t.max_epochs * self.steps_per_epoch)
        if t.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=total, pct_start=t.warmup_fraction)
        elif t.schedule == "cosine":
            warm = max(1, int(t.warmup_fraction * total))
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
            )
        else:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


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
