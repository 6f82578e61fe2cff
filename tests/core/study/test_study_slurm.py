"""A real one-node Slurm (scripts/slurm_local.sh, from Debian's slurm-wlm and munge): submit a tiny study,
cancel one array task while it runs, resubmit, and check the results are complete and unique. Skips with the
script's reason where the packages cannot be installed or the daemons do not start. `make test-slurm`."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from _tiny import TINY_STUDY, build_tiny_workspace
from mmfair.core.evaluation.tidy import KEY_COLUMNS, read_results
from mmfair.core.study import parse_study
from mmfair.core.study.backends import BACKENDS
from mmfair.core.study.runner import run_study
from mmfair.core.study.state import StudyDir

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "slurm_local.sh"


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    conf_dir = tmp_path / "slurm"
    started = subprocess.run(["bash", str(SCRIPT), "start", str(conf_dir)], capture_output=True, text=True)
    if started.returncode != 0:
        reason = started.stderr.strip().splitlines()[-1] if started.stderr.strip() else f"exit {started.returncode}"
        pytest.skip(reason)
    monkeypatch.setenv("SLURM_CONF", str(conf_dir / "slurm.conf"))
    yield conf_dir
    subprocess.run(["bash", str(SCRIPT), "stop", str(conf_dir)], check=False)


def _array_tasks(state: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", state, "-o", "%i"], capture_output=True, text=True, env=os.environ)
    return [line.strip() for line in out.stdout.splitlines() if "_" in line]


def test_cancel_one_array_task_then_resubmit(tmp_path, slurm):
    ws = build_tiny_workspace(tmp_path / "ws")
    # no tuning, longer runs (every epoch, no early stop) so a task is still running when it is cancelled
    spec = parse_study({**TINY_STUDY, "seeds": [0, 1, 2], "tuning": {"trials": 0},
                        "train": {**TINY_STUDY["train"], "epochs": 40, "patience": 40}})
    backend = BACKENDS.get("slurm").from_options(jobs=1, chunk_minutes=1.0, device="cpu",
                                                  options={"timeout_min": 20, "slurm_partition": "debug"})
    outcomes = []
    first = threading.Thread(target=lambda: outcomes.append(run_study(spec, ws, backend, device="cpu")))
    first.start()
    cancelled = None
    deadline = time.time() + 300
    while first.is_alive() and time.time() < deadline and cancelled is None:
        running = _array_tasks("RUNNING")
        if running:
            cancelled = running[0]
            subprocess.run(["scancel", "--signal=KILL", cancelled], check=True)
        time.sleep(0.5)
    first.join(timeout=600)
    assert cancelled is not None, "no array task was seen running"
    first_outcome = outcomes[0]
    print(f"\nfirst submission: {first_outcome.done} done, {first_outcome.unfinished} unfinished "
          f"(array task {cancelled} killed)")
    assert first_outcome.unfinished >= 1

    second = run_study(spec, ws, backend, device="cpu")
    print(f"resubmission: {second.done} done, {second.failed} failed, {second.unfinished} unfinished")
    assert (second.done, second.failed, second.unfinished) == (6, 0, 0)
    metrics = read_results(ws.metrics_csv)
    assert not metrics.duplicated(list(KEY_COLUMNS)).any()
    assert metrics["run_id"].nunique() == 6 == len(ws.finished_runs())
    states = StudyDir.of(ws, spec.name).all_states()
    assert sum(s["state"] == "done" for s in states.values()) == 6
