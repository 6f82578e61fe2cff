"""`mmfair study run` end to end on a tiny workspace: kill -9 twice and rerun gives the results of an
uninterrupted study (timing metrics excluded); the slurm backend through submitit's local executor gives
the same results; a job that raises is recorded failed and the study goes on; --retry-failed reruns it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from _tiny import TINY_STUDY, build_tiny_workspace
from mmfair.core.evaluation.tidy import KEY_COLUMNS, read_results
from mmfair.core.study import parse_study
from mmfair.core.study.backends import BACKENDS
from mmfair.core.study.runner import run_study, study_status
from mmfair.core.study.state import StudyDir

TIMING = {"train_seconds", "peak_memory_mb", "infer_stays_per_s"}
STUDY = {**TINY_STUDY,
         "eval_missing": [{"mechanism": "mcar", "rates": [1.0], "bootstrap": 20}],
         "eval_fair": {"attributes": ["gender"], "bootstrap": 20, "permutations": 20, "reference": "late"}}


def _results(ws) -> dict[str, pd.DataFrame]:
    out = {}
    for path in (ws.metrics_csv, ws.missing_csv, ws.fairness_csv):
        frame = read_results(path)
        frame = frame[~frame["metric"].isin(TIMING)]
        assert not frame.duplicated(list(KEY_COLUMNS)).any(), f"duplicate rows in {path.name}"
        out[path.name] = frame.sort_values(list(KEY_COLUMNS)).reset_index(drop=True)
    return out


def _assert_same(a: dict, b: dict) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted study (local backend, in this process)."""
    ws = build_tiny_workspace(tmp_path_factory.mktemp("ref") / "ws")
    outcome = run_study(parse_study(STUDY), ws, BACKENDS.get("local").from_options(jobs=1), device="cpu")
    assert (outcome.done, outcome.failed, outcome.unfinished, outcome.evaluated) == (6, 0, 0, True)
    return _results(ws)


def _count_done(sd: StudyDir, prefix: str) -> int:
    return sum(1 for k, s in sd.all_states().items() if k.startswith(prefix) and s.get("state") == "done")


def _run_until(cmd: list[str], sd: StudyDir, prefix: str, n: int) -> bool:
    """Start the study and kill -9 its whole process group once ``n`` jobs with ``prefix`` are done; True if
    it was killed before finishing."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if _count_done(sd, prefix) >= n:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.wait()
    return False


def test_kill_and_rerun_equals_uninterrupted(tmp_path, reference):
    ws = build_tiny_workspace(tmp_path / "ws")
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(STUDY))
    sd = StudyDir.of(ws, STUDY["name"])
    cmd = [sys.executable, "-m", "mmfair", "--workspace", str(ws.root), "study", "run", str(study_file),
           "--jobs", "2", "--device", "cpu"]
    assert _run_until(cmd, sd, "tune-", 1), "the study finished before the kill during tuning"
    assert _run_until(cmd, sd, "run-", 1), "the study finished before the kill during the final runs"
    assert _count_done(sd, "run-") < 4
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6 job(s) done, 0 failed, 0 unfinished; evaluated" in done.stdout
    _assert_same(_results(ws), reference)
    # one row set per run: 4 final runs in the metrics table, no trial run among them
    metrics = read_results(ws.metrics_csv)
    assert metrics["run_id"].nunique() == 4
    assert set(metrics["run_id"]) == {p.name for p in ws.finished_runs()}


def test_slurm_backend_through_submitit_local_executor(tmp_path, reference):
    ws = build_tiny_workspace(tmp_path / "ws")
    backend = BACKENDS.get("slurm").from_options(jobs=1, chunk_minutes=10, device="cpu",
                                                  options={"cluster": "local", "timeout_min": 10})
    outcome = run_study(parse_study(STUDY), ws, backend, device="cpu")
    assert (outcome.done, outcome.failed, outcome.unfinished) == (6, 0, 0)
    logs = list((StudyDir.of(ws, "tiny").root / "slurm").rglob("*_submitted.pkl"))
    assert len(logs) == 2  # one array task per phase: both tuning units (~4 min estimated), the 4 final runs
    _assert_same(_results(ws), reference)


def test_failed_job_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    from mmfair.core import pipeline

    ws = build_tiny_workspace(tmp_path / "ws")
    spec = parse_study({**TINY_STUDY, "tuning": {"trials": 0}})
    real_train = pipeline.train

    def flaky(configs, workspace, **kw):
        configs = list(configs)
        if configs[0].fusion == "late" and configs[0].seed == 1:
            raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")
        return real_train(configs, workspace, **kw)

    monkeypatch.setattr(pipeline, "train", flaky)
    local = BACKENDS.get("local").from_options(jobs=1)
    outcome = run_study(spec, ws, local, device="cpu")
    assert (outcome.done, outcome.failed, outcome.unfinished) == (3, 1, 0)
    assert outcome.failures[0][1] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    status = study_status(spec, ws)["table"].set_index("method")
    assert status.loc["late", "failed"] == 1 and status.loc["ehr", "done"] == 2
    monkeypatch.setattr(pipeline, "train", real_train)
    assert run_study(spec, ws, local, device="cpu").failed == 1  # not retried unless asked
    again = run_study(spec, ws, local, retry_failed=True, device="cpu")
    assert (again.done, again.failed) == (4, 0)
    assert read_results(ws.metrics_csv)["run_id"].nunique() == 4


def test_pack_fills_chunks_of_about_the_given_minutes():
    from mmfair.core.study.backends._slurm import pack

    jobs = list("abcdef")
    assert pack(jobs, [1, 1, 1, 1, 1, 1], 2.5) == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert pack(jobs, [5, 1, 1, 3, 0.5, 0.5], 4) == [["a"], ["b", "c"], ["d", "e", "f"]]  # a long job alone
    assert pack([], [], 60) == []


def test_two_study_processes_never_train_the_same_final_run_twice(tmp_path, monkeypatch):
    """Two `study run` invocations on one study (threads here, each with its own lock objects, so the file
    locks conflict exactly as across processes): every final run trains once, and both end with it done."""
    import threading
    from collections import Counter
    from types import SimpleNamespace

    from mmfair.core import pipeline
    from mmfair.core.config import config_hash

    ws = build_tiny_workspace(tmp_path / "ws")
    spec = parse_study({**TINY_STUDY, "tuning": {"trials": 0}})
    trained: Counter = Counter()

    def slow_train(configs, workspace, **kw):
        config = list(configs)[0]
        trained[config_hash(config.model_copy(update={"device": "auto"}).identity())] += 1
        time.sleep(0.3)  # long enough for the other invocation to reach the same job
        return SimpleNamespace(runs=[SimpleNamespace(run_id=f"r{config.fusion}{config.seed}", train_seconds=0.3)])

    monkeypatch.setattr(pipeline, "train", slow_train)
    outcomes = []

    def invocation():
        outcomes.append(run_study(spec, ws, BACKENDS.get("local").from_options(jobs=1), device="cpu"))

    threads = [threading.Thread(target=invocation) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 2
    # 2 methods × 2 seeds, each trained by exactly one of the two invocations
    assert len(trained) == 4 and set(trained.values()) == {1}
    assert [(o.done, o.failed, o.unfinished) for o in outcomes] == [(4, 0, 0), (4, 0, 0)]


def test_tuned_final_runs_are_labelled_per_method_and_compared_with_the_tuned_reference(reference):
    metrics, fairness = reference["metrics.csv"], reference["fairness.csv"]
    assert set(metrics["method"]) == {"ehr[tuned]", "late[tuned]"}
    compared = fairness[fairness["scenario_params"].astype(str).str.contains('"reference": "late\\[tuned\\]"')]
    assert len(compared) and set(compared["method"]) == {"ehr[tuned]"}
