"""``local``: a process pool on this machine (``--jobs N``). With visible GPUs, ``--runs-per-gpu K`` runs K jobs
on each GPU at once (small models leave a GPU nearly idle), jobs dealt round-robin over the GPUs. CPU runs
use one thread per process, so N processes scale on N cores. ``--jobs 1`` runs in this process."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from mmfair.core.study.backends import BACKENDS

log = logging.getLogger(__name__)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@BACKENDS.register("local", summary="a process pool on this machine (--jobs N, --runs-per-gpu K)")
@dataclass
class LocalBackend:
    jobs: int = 1
    runs_per_gpu: int = 1
    device: str = "auto"

    @classmethod
    def from_options(cls, jobs: int = 1, runs_per_gpu: int = 1, device: str = "auto", **_: Any) -> "LocalBackend":
        return cls(jobs=max(1, int(jobs)), runs_per_gpu=max(1, int(runs_per_gpu)), device=device)

    def slots(self) -> list[str | None]:
        """One device per worker: K per visible GPU when the device is a GPU, else ``jobs`` CPU workers."""
        gpus = visible_gpus() if self.device in ("auto", "cuda") else 0
        if gpus:
            return [f"cuda:{g}" for g in range(gpus) for _ in range(self.runs_per_gpu)]
        return [None] * self.jobs

    def execute(self, jobs: list, ctx: Any) -> None:
        from mmfair.core.study.runner import execute_job, worker_setup

        if not jobs:
            return
        slots = self.slots()
        if len(slots) == 1 or len(jobs) == 1:
            for job in jobs:
                execute_job(job, ctx, slots[0])
            return
        mp = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads / CUDA
        with ProcessPoolExecutor(max_workers=min(len(slots), len(jobs)), mp_context=mp, initializer=worker_setup) as pool:
            futures = [pool.submit(execute_job, job, ctx, slots[i % len(slots)]) for i, job in enumerate(jobs)]
            for future in as_completed(futures):
                try:
                    future.result()
                except BrokenProcessPool as exc:  # a worker killed (OOM, signal): its jobs stay unfinished
                    log.warning("a worker process died (%s); `mmfair study run` again resumes its jobs", exc)
                    break
