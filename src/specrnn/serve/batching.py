"""Server-side batching: uploads that arrive together run as one padded, length-sorted batch on one model thread.

Every part of the model is padding-exact, so a clip scores the same alone or batched; batching only saves time.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class _Job:
    waves: list  # np.ndarray or AudioError per file
    names: list[str]
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """`await batcher.predict(waves, names)` -> (Predictions, clips in the batch that ran them). A request waits at
    most `wait_s` for others to join its batch; a batch holds at most `max_clips` clips (a larger request runs alone)."""

    def __init__(self, backend, max_clips: int = 32, wait_s: float = 0.005):
        self.backend, self.max_clips, self.wait_s = backend, max_clips, wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="specrnn-model")  # the model runs one batch at a time
        self.task: asyncio.Task | None = None
        self.batches = self.clips = 0  # counters for /info

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.model_thread.shutdown(wait=False, cancel_futures=True)

    async def predict(self, waves: list, names: list[str]):
        job = _Job(waves, names)
        await self.queue.put(job)
        return await job.done

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Job | None = None  # a request that did not fit the last batch starts the next
        while True:
            jobs = [carry if carry is not None else await self.queue.get()]
            carry, size = None, len(jobs[0].waves)
            deadline = time.monotonic() + self.wait_s
            while size < self.max_clips:
                try:
                    job = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if size + len(job.waves) > self.max_clips:
                    carry = job
                    break
                jobs.append(job)
                size += len(job.waves)
            await self._run(loop, jobs)

    async def _run(self, loop, jobs: list[_Job]) -> None:
        waves = [w for j in jobs for w in j.waves]
        names = [n for j in jobs for n in j.names]
        try:
            preds = await loop.run_in_executor(self.model_thread, self.backend.predictor.predict_waves, waves, names)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error instead of hanging
            for j in jobs:
                if not j.done.done():
                    j.done.set_exception(e)
            return
        real = sum(1 for w in waves if not isinstance(w, Exception))
        self.batches, self.clips = self.batches + 1, self.clips + real
        k = 0
        for j in jobs:
            if not j.done.done():  # a client that went away cancelled its future
                j.done.set_result((preds[k : k + len(j.waves)], real))
            k += len(j.waves)
