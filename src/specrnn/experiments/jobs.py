"""Typed training jobs for the experiments (cv folds and seeds), run through the Python API: in this process one
at a time, or in a pool of worker processes (spawned: torch and fork do not mix), each with its share of the cores
and its own log file."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

from ..errors import Interrupted, SpecrnnError


@dataclass(frozen=True)
class TrainJob:
    """One training into `out`: from `data` with `config` and `seed`, or (`resume`) continuing the run there."""

    label: str  # what the user reads: 'fold 3 seed 0'
    out: str
    log_file: str
    data: str | None = None
    config: str | None = None
    seed: int = 0
    resume: bool = False


def run_train_job(job: TrainJob) -> None:
    """Run one job; its lines (and Lightning's) go to its log file. A failure is a SpecrnnError naming the job."""
    from .seeds import train

    os.makedirs(job.out, exist_ok=True)
    with open(job.log_file, "a" if job.resume else "w") as logf, contextlib.redirect_stdout(logf), \
            contextlib.redirect_stderr(logf):
        to_file = lambda *a, **k: print(*a, file=logf, flush=True)  # noqa: E731
        try:
            if job.resume:
                train(out=job.out, resume=True, log=to_file)
            else:
                train(job.data, job.out, job.config, {"seed": job.seed}, overwrite=True, log=to_file)
        except Interrupted:  # Ctrl-C: the CLI says what was kept and exits 130
            raise
        except SpecrnnError as e:
            print(f"specrnn: error: {e}", file=logf, flush=True)
            raise SpecrnnError(f"{job.label} failed: {e} (log: {job.log_file})") from None
        except Exception:
            traceback.print_exc(file=logf)
            raise SpecrnnError(f"{job.label} failed; see {job.log_file}") from None


def _start_worker(threads: int) -> None:
    """A worker's share of the cores, set before it loads torch's thread pools."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(threads)


def run_jobs(jobs: list[TrainJob], workers: int, threads: int, done: Callable[[TrainJob], None]) -> None:
    """Run every job (`workers` at a time, each with `threads` threads) and call `done` after each, in this process.
    The first failure stops the rest; Ctrl-C ends the workers (finished runs are kept, a rerun resumes)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            run_train_job(job)
            done(job)
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(threads,))
    try:
        pending = {pool.submit(run_train_job, job): job for job in jobs}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                job = pending.pop(future)
                future.result()  # raises the job's SpecrnnError
                done(job)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():
            child.terminate()
        raise
    pool.shutdown()
