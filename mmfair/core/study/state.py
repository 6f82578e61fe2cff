"""A study's folder (``<workspace>/studies/<name>/``) and the state of each job in it.

``jobs/<key>.json`` holds ``state`` (running | done | failed), the method, task, fold and seed, the host and pid
of the process that ran it, its seconds, its run id, and a failed job's one-line error. ``done`` is written
only after the job's outputs (run folder with ``DONE``, results rows, chosen configuration) are on disk, so a
job without it is re-run; a ``running`` file whose process is gone is a job that was killed.
``locks/<key>.lock`` is the job's cross-process lock (:meth:`StudyDir.lock`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfair.core.io import write_json_atomic
from mmfair.core.workspace import Workspace


@dataclass(frozen=True)
class StudyDir:
    root: Path

    @classmethod
    def of(cls, ws: Workspace, name: str) -> "StudyDir":
        return cls(ws.root / "studies" / name)

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def tuning(self) -> Path:
        return self.root / "tuning"

    @property
    def trial_runs(self) -> Path:
        return self.root / "trial_runs"

    @property
    def journal(self) -> Path:
        return self.root / "optuna.journal"

    @property
    def final_runs(self) -> Path:
        return self.root / "final_runs.json"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def job_file(self, key: str) -> Path:
        return self.jobs / f"{key}.json"

    def lock(self, key: str, blocking: bool = True):
        """The cross-process lock of one job (a file lock in the study folder, which every process and node
        running the study shares): held from "is it done?" to "done", so no job runs twice at once."""
        from filelock import FileLock

        self.locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.locks / f"{key}.lock"), timeout=-1 if blocking else 0)

    def held(self, key: str) -> bool:
        """Is the job's lock held by someone (another process, or another lock object in this one)?"""
        from filelock import Timeout

        lock = self.lock(key, blocking=False)
        try:
            lock.acquire()
        except Timeout:
            return True
        lock.release()
        return False

    def read(self, key: str) -> dict[str, Any] | None:
        path = self.job_file(key)
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write(self, key: str, **fields: Any) -> None:
        write_json_atomic(self.job_file(key), {**fields, "host": socket.gethostname(), "pid": os.getpid(),
                                                 "time": time.time()})

    def all_states(self) -> dict[str, dict[str, Any]]:
        if not self.jobs.exists():
            return {}
        out = {}
        for path in sorted(self.jobs.glob("*.json")):
            state = self.read(path.stem)
            if state is not None:
                out[path.stem] = state
        return out


def alive(state: dict[str, Any]) -> bool:
    """Is the process that marked this job running still there? (Unknown on another host: assumed alive.)"""
    if state.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(state["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True
