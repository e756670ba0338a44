"""Compute efficiency: achieved GFLOP/s of the RNN forward+backward in training / the float32 GEMM rate measured in
the same run (1024^3 matmul), and a profile of a training step showing where the rest of the time goes.

FLOPs counted: the gate matmuls only, 2 * B * T * G*H * (I + H) per layer and direction forward (G = 4 LSTM gates,
3 GRU), backward counted as twice the forward (the usual convention), T = the padded length actually computed.
python -m benchmarks.efficiency [--quick]
"""
from __future__ import annotations

import statistics
import time

import torch

from specrnn.config import load_config

from .common import (encoder_seconds, figure, finish, fsdd_prepared, load_str, profiled, quick_flag, specrnn_batches, start, table,
                     threads)
from .training_speed import specrnn_model

TARGET = 0.5
THREADS = 1


def gemm_gflops(n_threads: int, n: int = 1024, repeats: int = 7) -> float:
    """float32 GEMM rate (GFLOP/s) of an n^3 matmul on `n_threads` threads, median of repeats."""
    threads(n_threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def rnn_flops(model, batches, real_only: bool = False) -> float:
    """Forward+backward gate-matmul FLOPs of the encoder over batches (stacked lengths; padded T unless real_only)."""
    enc, k = model.encoder, model.cfg.stack
    gates = 4 if enc.cell == "lstm" else 3
    total = 0.0
    for x, L, _ in batches:
        steps = float(((L + k - 1) // k).sum()) if real_only else len(L) * -(-x.shape[1] // k)
        for rnn in enc.fwd:
            per_dir = 2 * gates * rnn.hidden_size * (rnn.input_size + rnn.hidden_size)
            total += 3 * per_dir * steps * (2 if enc.bidirectional else 1)
    return total


def step_phases(model, batches, cfg, prep) -> dict[str, float]:
    """Seconds per phase of full training steps: forward (front part, encoder, pooling+head), backward, optimiser."""
    from specrnn.models.frontends import stack_frames
    from specrnn.tasks import ClassificationTask

    task = ClassificationTask(prep.classes, cfg.train.label_smoothing)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    ph = dict.fromkeys(["normalise, augment, stack", "encoder forward", "pooling + head + loss", "backward (all)",
                        "clip + optimiser"], 0.0)
    for x, L, y in batches:
        t0 = time.perf_counter()
        h = model.specaugment(model.normalizer(x, L), L)
        h, Ls = stack_frames(h, L, model.cfg.stack)
        t1 = time.perf_counter()
        h = model.encoder(h, Ls)
        t2 = time.perf_counter()
        loss = task.loss(model.head(model.pooling(h, Ls)[0]), y)
        t3 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        t5 = time.perf_counter()
        for key, d in zip(ph, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            ph[key] += d
    return ph


RNN_KERNELS = ("rnn_layer", "aten::lstm", "aten::gru", "_thnn_fused")


def profile_ops(model, batches, cfg, prep, top: int = 12) -> tuple[list[list], float]:
    """torch.profiler over training steps: the ops with the most self CPU time, and the RNN kernels' seconds."""
    rows, ev = profiled(lambda: step_phases(model, batches, cfg, prep), top)
    kernels = sum(e.self_cpu_time_total for e in ev if any(k in e.key for k in RNN_KERNELS) and "evaluate_function" not in e.key)
    return rows, kernels / 1e6


def main(argv=None) -> dict:
    q = quick_flag(argv)
    res = start("efficiency", q)
    prep, cfg = fsdd_prepared()
    gemm = {n: gemm_gflops(n) for n in (1, 2)}
    threads(THREADS)
    model = specrnn_model(prep, cfg).train()
    batches = specrnn_batches(prep, cfg)[: 10 if q else 40]
    flops, useful = rnn_flops(model, batches), rnn_flops(model, batches, real_only=True)
    enc_s = encoder_seconds(model, batches, 2 if q else 3)
    step_phases(model, batches[:3], cfg, prep)  # warm-up
    ph = step_phases(model, batches, cfg, prep)
    step_s = sum(ph.values())
    rnn_rate = flops / enc_s / 1e9
    res["figures"].append(figure("RNN forward+backward in training: achieved GFLOP/s / GEMM rate", rnn_rate / gemm[THREADS],
                                 "fraction", f"float32 1024^3 GEMM on {THREADS} thread: {gemm[THREADS]:.0f} GFLOP/s; RNN: {rnn_rate:.0f} GFLOP/s",
                                 None,
                                 target=f">= {TARGET:.0%}", met=rnn_rate / gemm[THREADS] >= TARGET, threads=THREADS,
                                 achieved_gflops=rnn_rate, gemm_gflops=gemm[THREADS],
                                 note=f"encoder only, {len(batches)} bucketed FSDD batches of 32; padded steps counted"))
    res["figures"].append(figure("whole training step: RNN GFLOP/s / GEMM rate", flops / step_s / 1e9 / gemm[THREADS],
                                 "fraction", "float32 1024^3 GEMM", None, threads=THREADS,
                                 note="same RNN FLOPs over the whole step (normalise, encoder, pooling, loss, backward, AdamW)"))
    res["figures"].append(figure("useful (real-frame) share of the RNN FLOPs computed", useful / flops, "fraction",
                                 note="length bucketing leaves little padding"))
    res["tables"].append(table("GEMM rate (float32, 1024^3, median of 7)", ["threads", "GFLOP/s"],
                               [[n, f"{g:.0f}"] for n, g in gemm.items()]))
    rows = [[k, f"{v:.2f}", f"{100 * v / step_s:.0f}%"] for k, v in ph.items()]
    rows.append(["total", f"{step_s:.2f}", "100%"])
    res["tables"].append(table(f"Where a training step's time goes ({len(batches)} steps, 1 thread)", ["phase", "seconds", "share"],
                               rows, note=f"encoder forward+backward alone: {enc_s:.2f} s ({100 * enc_s / step_s:.0f}% of the step)"))
    ops, _ = profile_ops(model, batches, cfg, prep)
    res["tables"].append(table("torch.profiler: ops by self CPU time over the same steps",
                               ["op", "calls", "self ms", "share"], ops))
    # the same measure with LSTM cells: PyTorch runs CPU LSTMs in one oneDNN kernel per layer, while a GRU runs as
    # per-time-step ATen ops (mm, add, sigmoid...), so the two cells sit at different fractions of the GEMM rate
    lstm_cfg = load_config("lstm", [])
    lstm = specrnn_model(prep, lstm_cfg).train()
    lstm_flops = rnn_flops(lstm, batches)
    lstm_rate = lstm_flops / encoder_seconds(lstm, batches, 2 if q else 3) / 1e9
    res["figures"].append(figure("same, LSTM cells (preset lstm, 2 x 128): achieved GFLOP/s / GEMM rate", lstm_rate / gemm[THREADS],
                                 "fraction", f"float32 1024^3 GEMM on {THREADS} thread; RNN: {lstm_rate:.0f} GFLOP/s", None,
                                 target=f">= {TARGET:.0%}", met=lstm_rate / gemm[THREADS] >= TARGET, threads=THREADS,
                                 achieved_gflops=lstm_rate, note="encoder only, same batches"))
    step_phases(lstm, batches[:3], lstm_cfg, prep)
    _, kernel_s = profile_ops(lstm, batches, lstm_cfg, prep)
    res["figures"].append(figure("LSTM: inside the oneDNN RNN kernels only (profiler): GFLOP/s / GEMM rate",
                                 lstm_flops / kernel_s / 1e9 / gemm[THREADS], "fraction", "float32 1024^3 GEMM", None,
                                 threads=THREADS, note="the kernels' self time under the profiler; the rest of the encoder is "
                                 "the within-length reversal (gather), concatenation and masking"))
    res["notes"].append(f"RNN FLOPs per pass {flops / 1e9:.2f} GFLOP over {len(batches)} batches; encoder "
                        f"{enc_s:.2f} s -> {rnn_rate:.1f} GFLOP/s. Load: {load_str()}.")
    print(finish(res, q))
    return res


if __name__ == "__main__":
    main()
