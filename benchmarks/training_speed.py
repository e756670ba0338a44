"""Training throughput on FSDD (frames/s of one epoch), padding waste, and packed vs padded-exact RNN passes.

specrnn's pipeline (cached features, length bucketing, padding-exact RNN; Lightning, as `specrnn train` runs it,
and the same parts in a bare loop) against the plain baseline of benchmarks/baseline.py (librosa features
extracted in the data loader every epoch, random batches padded to the longest clip, same RNN size).
python -m benchmarks.training_speed [--quick]
"""
from __future__ import annotations

import shutil
import statistics
import time

import numpy as np
import torch

from .common import ESC10, OUT, encoder_seconds, figure, finish, fsdd_prepared, load_str, quick_flag, specrnn_batches, start, table, threads

TARGET = 5.0
THREADS = 1  # what specrnn's training uses on this 2-core machine (pipeline._set_threads: half the cores)


def specrnn_model(prep, cfg):
    from specrnn.models import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.features.n_features, len(prep.classes), cfg.augment)
    model.normalizer.fit(prep.sets["train"].features)
    return model


def bare_epoch(prep, cfg, max_batches: int | None = None) -> dict:
    """specrnn's parts without Lightning: bucketed cached batches, SpecRNN, AdamW, grad clipping."""
    from specrnn.tasks import ClassificationTask

    model = specrnn_model(prep, cfg).train()
    task = ClassificationTask(prep.classes, cfg.train.label_smoothing)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    t0 = time.perf_counter()
    frames = clips = 0
    for i, (x, lengths, y) in enumerate(specrnn_batches(prep, cfg)):  # batching counted in the epoch time
        if max_batches is not None and i >= max_batches:
            break
        loss = task.loss(model(x, lengths), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        frames += int(lengths.sum())
        clips += len(y)
    return {"seconds": time.perf_counter() - t0, "frames": frames, "clips": clips}


def lightning_epochs(prep, cfg, epochs: int) -> list[dict]:
    """`specrnn train`'s own fit() (Lightning) for `epochs` epochs; each training epoch timed without validation."""
    from lightning.pytorch.callbacks import Callback

    from specrnn.jobs import train_prepared as fit

    class EpochTimer(Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_validation_epoch_start(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.times.append(time.perf_counter() - self.t0)

    from specrnn.config import load_config

    cfg = load_config(cfg, [f"train.max_epochs={epochs}", "train.patience=100", f"train.threads={THREADS}"])
    run = OUT / "runs" / "throughput-lightning"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    timer = EpochTimer()
    fit(prep, cfg, run, log=lambda *a: None, callbacks=[timer], evaluate_test=False)
    frames = int(prep.sets["train"].lengths.sum())
    return [{"seconds": s, "frames": frames, "clips": len(prep.sets["train"])} for s in timer.times]


def baseline_epoch(prep, cfg, max_batches: int | None, seed: int = 0) -> dict:
    from .baseline import PlainRNN, librosa_logmel, loader, train_epoch

    train = prep.sets["train"]
    librosa_logmel(train.paths[0])  # librosa's first call compiles numba code for seconds: not part of an epoch
    torch.manual_seed(seed)
    model = PlainRNN.like(cfg.model, n_out=len(prep.classes))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    r = train_epoch(model, loader(train.paths, train.targets.tolist(), seed=seed), opt, max_batches)
    r["parameters"] = sum(p.numel() for p in model.parameters())
    r["desc"] = model.desc
    return r


def padding_waste(prep, cfg, epochs: int = 5) -> list[list]:
    """Share of padded frames per epoch, random batches vs length bucketing (FSDD train split, ESC-10 all clips)."""
    import soundfile as sf

    from specrnn.data.batching import BucketBatchSampler, padding_fraction

    data = {"FSDD train": prep.sets["train"].lengths}
    esc = sorted(ESC10.rglob("*.ogg"))
    if esc:
        hop = cfg.features.hop_length / cfg.features.sample_rate
        data["ESC-10 (all 400)"] = np.array([1 + int(sf.info(str(p)).duration / hop) for p in esc])
    rows = []
    for name, lengths in data.items():
        fr = {}
        for bucket in (False, True):
            s = BucketBatchSampler(lengths, cfg.train.batch_size, shuffle=True, bucket=bucket, seed=0)
            vals = []
            for e in range(epochs):
                s.set_epoch(e)
                vals.append(padding_fraction(lengths, s.batches()))
            fr[bucket] = statistics.mean(vals)
        rows.append([name, len(lengths), f"{100 * fr[False]:.1f}%", f"{100 * fr[True]:.1f}%",
                     f"{(1 - fr[True]) / (1 - fr[False]):.2f}x"])
    return rows


def main(argv=None) -> dict:
    q = quick_flag(argv)
    res = start("training_speed", q)
    threads(THREADS)
    prep, cfg = fsdd_prepared()
    n_train = len(prep.sets["train"])

    # throughput: frames/s of whole epochs (a part of an epoch misleads: the baseline's first 12 batches ran 2.8x slower
    # per frame than the rest of its epoch, set-up paid by the first batches of each new shape)
    base_batches = None
    lit = lightning_epochs(prep, cfg, 1 if q else 3)
    bare, base = [], []
    for rep in range(1 if q else 2):  # interleaved, so a change in the machine's load hits both loops alike
        bare.append(bare_epoch(prep, cfg))
        base.append(baseline_epoch(prep, cfg, base_batches, seed=rep))
    fps = {k: statistics.median(r["frames"] / r["seconds"] for r in v) for k, v in (("lit", lit), ("bare", bare), ("base", base))}
    params = sum(p.numel() for p in specrnn_model(prep, cfg).parameters())
    base_desc = f"plain loop: librosa in the DataLoader, random padded batches, {base[0]['desc']} ({base[0]['parameters']:,} params)"
    res["figures"].append(figure("training throughput, FSDD, one epoch (specrnn train, Lightning)", fps["lit"], "frames/s",
                                 base_desc, fps["base"], target=f">= {TARGET:.0f}x", met=fps["lit"] / fps["base"] >= TARGET,
                                 threads=THREADS, epochs_measured=len(lit), parameters=params,
                                 note="10 ms feature frames of real audio per second; validation excluded"))
    res["figures"].append(figure("training throughput, FSDD, one epoch (specrnn parts in a bare loop)", fps["bare"], "frames/s",
                                 base_desc, fps["base"], threads=THREADS, note="same model, batches and optimiser, no Lightning"))
    med = lambda runs, key: statistics.median(r[key] / r["seconds"] if key else r["seconds"] for r in runs)  # noqa: E731
    rows = [[name, len(runs), f"{med(runs, None):.1f}", f"{med(runs, 'frames'):,.0f}", f"{med(runs, 'clips'):,.0f}"]
            for name, runs in (("specrnn train (Lightning)", lit), ("specrnn parts, bare loop", bare),
                               ("plain baseline" + (f" (first {base_batches} batches)" if base_batches else ""), base))]
    res["tables"].append(table(f"Training epoch on FSDD ({n_train} training clips, torch threads {THREADS})",
                               ["loop", "epochs timed", "seconds (median)", "frames/s", "clips/s"], rows))

    # padding waste, and packed vs padded-exact RNN on the same batches
    res["tables"].append(table("Padding: share of padded frames per epoch (batch 32, mean of 5 epochs)",
                               ["data", "clips", "random batches", "length-bucketed", "real frames per computed frame"],
                               padding_waste(prep, cfg)))
    model = specrnn_model(prep, cfg).train()
    n_b = 8 if q else 25
    rows = []
    for bucket in (True, False):
        batches = specrnn_batches(prep, cfg, bucket=bucket)[:n_b]
        padded = encoder_seconds(model, batches, 2 if q else 3, impl="padded")
        packed = encoder_seconds(model, batches, 2 if q else 3, impl="packed")
        kind = "length-bucketed" if bucket else "random"
        rows.append([f"{kind} batches ({n_b})", f"{padded:.2f}", f"{packed:.2f}", f"{packed / padded:.2f}x"])
        res["figures"].append(figure(f"RNN forward+backward, {kind} batches: padded-exact", padded, "s", "packed sequences",
                                     packed, better="lower", threads=THREADS, note="identical outputs; encoder only"))
    res["tables"].append(table("Padded-exact vs packed RNN, encoder forward+backward (median seconds)",
                               ["batches", "padded-exact s", "packed s", "packed / padded"], rows))
    res["notes"].append(f"torch threads {THREADS}; load during the run: {load_str()}.")
    print(finish(res, q))
    return res


if __name__ == "__main__":
    main()
