"""`fit`: train a model on prepared data into a run folder (model.pt at the best validation, history.csv,
checkpoints for resume), with the batch augmentation the config asks for. Evaluation is the caller's (jobs.py)."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..data.dataset import compute_features
from ..devices import set_threads
from ..errors import BadFilesError, Interrupted, SpecrnnError
from ..runs import SPLIT_FILE, version
from .prepare import Prepared, make_loader


@dataclass
class Fitted:
    """What training itself tells about a run (the model is in run_dir/model.pt)."""

    epochs_run: int
    parameters: int
    train_seconds: float
    seconds_before_resume: float  # the epochs a resumed run had trained before, counted in train_seconds
    hardware: str


def fit(prep: Prepared, cfg: Config, run_dir: Path, resume: bool = False, log=print, callbacks=()) -> Fitted | None:
    """Train on prepared data into `run_dir`; None in the extra processes of a DDP run (rank 0 reports).

    Shared by `train`, `cv` (one call per fold) and `tune` (one call per trial, with a pruning callback)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import lightning.pytorch as L

    from ..models import build_model
    from ..models.build import count_parameters
    from ..tasks import make_task, with_kind
    from .callbacks import BestModel, EpochLog, History, weight_averaging
    from .module import LitClassifier
    from .trainer import make_trainer

    cfg = with_kind(cfg, prep.task_kind)  # the kind prepare_data read from the labels (runs and cv pass it concrete)
    set_threads(cfg.train.threads)
    L.seed_everything(cfg.seed, verbose=False)
    prep.manifest.to_csv(run_dir / SPLIT_FILE)
    sets = prep.sets
    task = make_task(cfg.task, prep.classes, cfg.train.label_smoothing)
    model = build_model(cfg.model, cfg.features.n_features, task, cfg.augment)
    task.check(model, sets, cfg)  # e.g. CTC: every clip long enough for its token sequence
    if not task.sequence and (cfg.augment.concat > 0 or cfg.augment.pause_crop > 0):
        raise SpecrnnError(f"augment.concat and augment.pause_crop edit token sequences; these labels are {cfg.task.kind} "
                           "(set both to 0)")
    if cfg.train.class_weights == "balanced":
        if task.sequence:
            raise SpecrnnError("train.class_weights: balanced weights classes; a CTC model's tokens are not classes (use none)")
        w = task.balance(sets["train"].targets)
        log(f"class weights (train.class_weights: balanced): {w.min():.2f} to {w.max():.2f} "
            f"(the rarest training class counts {w.max() / w.min():.1f}x the commonest per clip)")
    model.normalizer.fit(sets["train"].features)  # training rows only: val/test never shape the statistics
    train_loader, val_loader = make_loader(sets["train"], cfg, True), make_loader(sets["val"], cfg, False)
    meta = {"config": cfg.to_dict(), "classes": prep.classes, "specrnn_version": version()}
    averaging = weight_averaging(cfg)
    best = BestModel(run_dir, meta, cfg.train.patience, cfg.train.min_epochs, averaging)
    extra = [averaging] if averaging is not None else []
    history = History(run_dir)
    epoch_lines = [] if sys.stderr.isatty() else [EpochLog(log)]  # a terminal has Lightning's progress bar instead
    trainer = make_trainer(cfg, run_dir, [*extra, best, history, *epoch_lines, *callbacks])
    n_groups = int(sets["train"].groups.max()) + 1 if cfg.train.adversary > 0 else 0
    steps = min(len(train_loader), cfg.train.steps_per_epoch or len(train_loader))  # what the LR schedule spans
    lit = LitClassifier(model, task, cfg, steps, batch_augment(cfg, task.n_outputs, log), n_groups)
    log(f"training {describe(cfg)} ({count_parameters(model):,} parameters) on {len(sets['train'])} clips, "
        f"validating on {len(sets['val'])}; {hardware(trainer)}")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    t_train = time.perf_counter()
    try:
        trainer.fit(lit, train_loader, val_loader, ckpt_path=str(ckpt) if resume and ckpt.exists() else None)
    except SystemExit:  # Lightning's answer to Ctrl-C: it has saved nothing new and ignores further Ctrl-C
        if not trainer.interrupted:
            raise
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise Interrupted(f"training interrupted; resume with: specrnn train --resume --out {run_dir}") from None
    train_seconds = time.perf_counter() - t_train + history.seconds_before_resume  # a resumed run counts its earlier epochs
    if not trainer.is_global_zero:
        return None
    if trainer.interrupted:
        raise Interrupted(f"training interrupted; resume with: specrnn train --resume --out {run_dir}")
    return Fitted(trainer.current_epoch, count_parameters(model), train_seconds, history.seconds_before_resume,
                  hardware(trainer))


def hardware(trainer) -> str:
    """Where and how the training runs, e.g. 'cuda:0, bf16-mixed' or 'cpu x 2 processes, 32-true'."""
    procs = f" x {trainer.world_size} processes" if trainer.world_size > 1 else ""
    return f"{trainer.strategy.root_device}{procs}, {trainer.precision}"


def batch_augment(cfg: Config, n_classes: int, log=print):
    """The training-batch augmentation the config asks for (None when it asks for none); noise (built-in colours
    and clips from a folder) is turned into features once (clips cached) and mixed in the power domain."""
    import torch

    from ..augment import BatchAugment, colored_noise
    from ..config import NOISE_COLORS
    from ..features import FeatureExtractor, dct_matrix

    a, f = cfg.augment, cfg.features
    if not (a.gain_db > 0 or a.time_shift > 0 or a.mixup > 0 or a.concat > 0 or a.pause_crop > 0 or a.freq_warp > 0 or a.speed > 0 or a.noise_dir or a.noise_colors):
        return None
    noise = []
    if a.noise_colors:  # two seconds of each colour, the same every run: a stationary bank to slice from
        g, n = torch.Generator().manual_seed(0), 2 * f.sample_rate
        waves = torch.stack([colored_noise(NOISE_COLORS[c], n, g) for c in a.noise_colors])
        with torch.no_grad():
            noise += list(FeatureExtractor(f)(waves, torch.full((len(waves),), n))[0])
    if a.noise_dir:
        from ..data.manifest import walk_audio

        if not Path(a.noise_dir).is_dir():
            raise SpecrnnError(f"augment.noise_dir {a.noise_dir}: {'not a folder' if Path(a.noise_dir).exists() else 'no such folder'}")
        paths = [str(p) for p in walk_audio(Path(a.noise_dir))]
        if not paths:
            raise SpecrnnError(f"augment.noise_dir {a.noise_dir}: no audio files")
        feats, errors = compute_features(paths, cfg.features, cfg.data.cache_dir, desc="noise")
        clips = [torch.from_numpy(x) for x in feats if x is not None]
        if errors and (cfg.data.on_error == "stop" or not clips):  # training must not quietly run without its noise
            raise BadFilesError(errors, f"They are in augment.noise_dir {a.noise_dir}" + (
                "; none of its files is usable." if not clips else ". Fix or remove them, or pass --on-error skip."))
        noise += clips
        log(f"background noise: {len(clips)} clip(s) from {a.noise_dir}" + (f" ({len(errors)} unusable)" if errors else ""))
    return BatchAugment(a, n_classes, noise, dct=dct_matrix(f.n_mels, f.n_mfcc) if f.kind == "mfcc" else None)


def describe(cfg: Config) -> str:
    m = cfg.model
    front = "cnn + " if m.frontend.type == "cnn" else ""
    end = "CTC" if cfg.task.kind == "ctc" else "frame outputs" if m.head == "frame" else m.pooling
    return f"{front}{'bi' if m.bidirectional else ''}{m.cell} {m.layers}x{m.hidden} + {end}"
