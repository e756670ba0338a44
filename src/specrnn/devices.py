"""Where work runs: the default device, CPU threads per run, and how many runs share the machine at once."""
from __future__ import annotations

import functools
import os

GPU_JOBS = 6  # runs sharing one GPU by default: measured on an H200 with 16 cores (benchmarks/RESULTS.md)
GPU_MEMORY_PER_JOB = 2 << 30  # bytes; an FSDD-sized run used about 1.4 GiB


def default_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_threads(cores: int | None = None) -> int:
    """Threads a CPU run takes by default: half the cores, at most 4. On the 2-core reference machine one thread
    beat two for every RNN we measured unless OpenMP spin-waits, which hurts anything sharing the cores."""
    return max(1, min(4, (cores or os.cpu_count() or 2) // 2))


def set_threads(threads: int | None) -> None:
    """CPU threads: the configured number (train.threads), else `cpu_threads()` on a machine without a GPU."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    elif not torch.cuda.is_available():
        torch.set_num_threads(cpu_threads())


def keeps_threads(fn):
    """Wrap a library entry point: whatever a run sets (train.threads, `set_threads`), the caller's torch thread count
    is back as it was when the call returns, so code that trains in a notebook or script is not left on one thread."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        import torch

        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return call


def auto_jobs(n_runs: int, cuda: bool | None = None, cores: int | None = None, gpu_memory: int | None = None) -> int:
    """Runs at once: on CPU, the cores over each run's threads; on a GPU, several runs share it (small RNNs leave it
    mostly idle between the steps of one run), two cores each, at most GPU_JOBS and 2 GiB of GPU memory each."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    cores = cores or os.cpu_count() or 2
    if cuda:
        gpu_memory = gpu_memory or torch.cuda.get_device_properties(0).total_memory
        return max(1, min(n_runs, cores // 2, GPU_JOBS, gpu_memory // GPU_MEMORY_PER_JOB))
    return max(1, min(n_runs, cores // cpu_threads(cores)))
