"""The LightningModule: the science of training (loss, optimiser, schedule, the speaker adversary); the task
supplies the loss and what validation counts, the Trainer (trainer.py) and callbacks (callbacks.py) the rest."""
from __future__ import annotations

import math
import time

import lightning.pytorch as L
import torch

from ..config import Config
from ..errors import SpecrnnError
from ..models import SpecRNN
from ..tasks import ClassificationTask, CTCTask


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
