"""``slurm``: submitit job arrays. Jobs are packed into array tasks of about ``--chunk-minutes`` each (one array
element per tiny run would overload a scheduler); each task runs its chunk with the local pool on the CPUs
(or GPUs) it was given. ``study run`` waits for the array; a task that was preempted, killed or timed out
leaves its unfinished jobs without a ``done`` state, and running ``study run`` again resubmits only those.

``--slurm KEY=VALUE`` passes submitit options (``slurm_partition=gpu``, ``gpus_per_node=1``,
``cpus_per_task=8``, ``timeout_min=90``, ``slurm_array_parallelism=16``); ``cluster=local`` runs the same
arrays with submitit's local executor (the fast test suite does), ``cluster=debug`` in this process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfair.core.errors import ConfigError
from mmfair.core.study.backends import BACKENDS

log = logging.getLogger(__name__)

#: Estimated minutes of one job when its kind has no finished example yet (tuning: per trial).
DEFAULT_MINUTES = {"train": 1.0, "tune": 1.0}


def run_chunk(jobs: list, ctx: Any, workers: int, runs_per_gpu: int, device: str) -> int:
    """One array task: its chunk through the local pool. Returns how many of its jobs ended done or failed."""
    from mmfair.core.study.backends._local import LocalBackend
    from mmfair.core.study.runner import worker_setup

    worker_setup()
    LocalBackend(jobs=workers, runs_per_gpu=runs_per_gpu, device=device).execute(jobs, ctx)
    return len(jobs)


def estimate_minutes(job: Any, ctx: Any, past: dict[str, float]) -> float:
    if job.kind in past:  # measured on this study's finished jobs
        return past[job.kind]
    return DEFAULT_MINUTES[job.kind] * (ctx.study.tuning.trials if job.kind == "tune" else 1)


def pack(jobs: list, minutes: list[float], chunk_minutes: float) -> list[list]:
    """Consecutive jobs into chunks of at most ``chunk_minutes`` (a longer job gets a chunk of its own)."""
    chunks: list[list] = []
    current: list = []
    total = 0.0
    for job, m in zip(jobs, minutes):
        if current and total + m > chunk_minutes:
            chunks.append(current)
            current, total = [], 0.0
        current.append(job)
        total += m
    if current:
        chunks.append(current)
    return chunks


def _past_minutes(ctx: Any) -> dict[str, float]:
    """Median minutes of the study's finished jobs, by kind (a better estimate than the default once known)."""
    import statistics

    from mmfair.core.study.state import StudyDir
    from mmfair.core.workspace import Workspace

    sd = StudyDir.of(Workspace.resolve(ctx.workspace), ctx.study.name)
    by_kind: dict[str, list[float]] = {}
    for state in sd.all_states().values():
        if state.get("state") == "done" and state.get("seconds") is not None and state.get("kind") in DEFAULT_MINUTES:
            by_kind.setdefault(state["kind"], []).append(float(state["seconds"]) / 60)
    return {k: statistics.median(v) for k, v in by_kind.items()}


def _queued() -> set[str] | None:
    """Job ids Slurm still holds (one line per array element), or None when squeue cannot be asked."""
    import subprocess

    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {line.strip() for line in out.stdout.splitlines()} if out.returncode == 0 else None


def _wait(submitted: list, on_slurm: bool, poll_s: float = 2.0, grace_s: float = 30.0) -> int:
    """Wait until every array task has finished or is gone; returns how many ended without finishing.

    Without accounting (no slurmdbd, as on a one-node test cluster) ``sacct`` cannot say that a cancelled task
    ended, so on Slurm a task that left ``squeue`` without writing its result counts as lost after ``grace_s``.
    """
    import time

    from submitit.core.utils import FailedJobError, UncompletedJobError

    pending, gone_since, lost = list(submitted), {}, 0
    while pending:
        queued = _queued() if on_slurm else None
        still = []
        for job in pending:
            if job.done():
                try:
                    job.result()
                except (UncompletedJobError, FailedJobError) as exc:
                    lost += 1
                    log.warning("array task %s ended without finishing its chunk (%s); `mmfair study run` again "
                                "resumes it", job.job_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                continue
            if queued is not None and job.job_id not in queued:
                first = gone_since.setdefault(job.job_id, time.time())
                if time.time() - first > grace_s:
                    lost += 1
                    log.warning("array task %s left the queue without a result; `mmfair study run` again resumes it",
                                job.job_id)
                    continue
            still.append(job)
        pending = still
        if pending:
            time.sleep(poll_s)
    return lost


@BACKENDS.register("slurm", summary="submitit job arrays packed into chunks of --chunk-minutes (resubmit to resume)")
@dataclass
class SlurmBackend:
    chunk_minutes: float = 60.0
    workers: int = 1
    runs_per_gpu: int = 1
    device: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    @classmethod
    def from_options(cls, jobs: int = 1, runs_per_gpu: int = 1, chunk_minutes: float = 60.0, device: str = "auto",
                     options: dict[str, Any] | None = None, **_: Any) -> "SlurmBackend":
        return cls(chunk_minutes=float(chunk_minutes), workers=max(1, int(jobs)), runs_per_gpu=max(1, int(runs_per_gpu)),
                   device=device, options=dict(options or {}))

    def _executor(self, ctx: Any):
        import submitit

        from mmfair.core.study.state import StudyDir
        from mmfair.core.workspace import Workspace

        options = dict(self.options)
        cluster = options.pop("cluster", None)
        folder = self.folder or StudyDir.of(Workspace.resolve(ctx.workspace), ctx.study.name).root / "slurm" / "%j"
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        params: dict[str, Any] = {"name": f"mmfair-{ctx.study.name}", "cpus_per_task": self.workers,
                                  "timeout_min": int(self.chunk_minutes * 2 + 10)}
        params.update(options)
        try:
            executor.update_parameters(**params)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--slurm options: {exc}") from None
        return executor

    def execute(self, jobs: list, ctx: Any) -> None:
        if not jobs:
            return
        past = _past_minutes(ctx)
        chunks = pack(jobs, [estimate_minutes(j, ctx, past) for j in jobs], self.chunk_minutes)
        executor = self._executor(ctx)
        n = len(chunks)
        log.info("submitting %d job(s) as an array of %d task(s) of about %g minutes", len(jobs), n, self.chunk_minutes)
        submitted = executor.map_array(run_chunk, chunks, [ctx] * n, [self.workers] * n, [self.runs_per_gpu] * n,
                                       [self.device] * n)
        lost = _wait(submitted, executor.cluster == "slurm")
        if lost:
            log.warning("%d of %d array task(s) were lost", lost, n)
