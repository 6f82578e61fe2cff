"""Run a study: phase 1 tunes every unit, phase 2 trains the frozen list of final runs (chosen configuration ×
every seed), phase 3 runs the study's eval-missing and eval-fair settings on its final runs. Each phase's jobs
go to an execution backend (:mod:`mmfair.core.study.backends`); each job is skipped when its state file says
done, so ``mmfair study run`` again after a kill, a preemption or a crash re-runs only what is unfinished.

A job that raises is recorded ``failed`` with its one-line error and the study continues (``retry_failed``
runs such jobs again). Final runs are ordinary runs (``runs/<run_id>/``) and their rows ordinary results rows
(``results/*.csv``), so ``mmfair report`` reads a study like any other workspace.

A study with ``stores:`` runs the same three phases once per store, each in the store's own workspace
(``<workspace>/stores/<name>/``, prepared first; :mod:`mmfair.core.study.stores`), one store after another.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmfair.core.config import TrainConfig, config_hash
from mmfair.core.io import write_json_atomic
from mmfair.core.study.jobs import Job, final_jobs, study_label, tune_jobs, tuned_label, units
from mmfair.core.study.spec import StudySpec
from mmfair.core.study.state import StudyDir, alive
from mmfair.core.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobContext:
    """What a worker needs besides the job (picklable: it crosses process and node boundaries)."""

    workspace: Path
    study: StudySpec
    retry_failed: bool = False
    device: str = "auto"
    wait: bool = False  # wait for a job another process is running (then skip it if that process finished it)


@dataclass
class StudyOutcome:
    done: int = 0
    failed: int = 0
    unfinished: int = 0
    evaluated: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)
    stores: dict[str, Path] = field(default_factory=dict)  # store name → its workspace (a study with stores)


def execute_job(job: Job, ctx: JobContext, device: str | None = None) -> str:
    """Run one job unless it is done (or failed, without ``retry_failed``); returns its final state, or ``busy``
    when another process holds the job's lock (it is running it) and ``ctx.wait`` is off. The lock is held from
    the done check to the done mark, so two ``study run`` processes on one study never run a job twice."""
    from filelock import Timeout

    ws = Workspace.resolve(ctx.workspace)
    sd = StudyDir.of(ws, ctx.study.name)
    lock = sd.lock(job.key, blocking=ctx.wait)
    try:
        lock.acquire()
    except Timeout:
        log.info("%s %s: running in another process; skipped here", job.kind, job.method)
        return "busy"
    try:
        return _execute_locked(job, ws, sd, ctx, device)
    finally:
        lock.release()


def _execute_locked(job: Job, ws: Workspace, sd: StudyDir, ctx: JobContext, device: str | None) -> str:
    previous = sd.read(job.key) or {}
    if previous.get("state") == "done" or (previous.get("state") == "failed" and not ctx.retry_failed):
        return str(previous["state"])
    fields = {"kind": job.kind, "method": job.method, **job.info}
    sd.write(job.key, state="running", started=time.time(), **fields)
    started = time.time()
    try:
        extra = _run(job, ws, sd, ctx, device or ctx.device)
    except Exception as exc:  # noqa: BLE001 - recorded, and the study goes on
        from mmfair.core.study.tuning import one_line

        log.warning("%s %s failed: %s", job.kind, job.method, one_line(exc))
        sd.write(job.key, state="failed", error=one_line(exc), seconds=time.time() - started, **fields)
        return "failed"
    sd.write(job.key, state="done", seconds=time.time() - started, **fields, **extra)
    return "done"


def _run(job: Job, ws: Workspace, sd: StudyDir, ctx: JobContext, device: str) -> dict[str, Any]:
    if job.kind == "tune":
        from mmfair.core.study.tuning import tune_unit

        outcome = tune_unit(job.unit, ws, sd, ctx.study.tuning, device=device)
        return {"value": outcome.get("value"), "best_index": outcome.get("best_index")}
    from mmfair.core import pipeline

    config = job.config.model_copy(update={"device": device})
    result = pipeline.train([config], ws, bootstrap=ctx.study.bootstrap)
    run = result.runs[0]
    return {"run_id": run.run_id, "train_seconds": run.train_seconds}


def worker_setup() -> None:
    """A pool worker: one CPU thread per process, so N processes scale on N cores."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)


# ---- phases -------------------------------------------------------------------------------------------
def chosen_configs(spec: StudySpec, sd: StudyDir) -> dict[str, TrainConfig | None]:
    from mmfair.core.study.tuning import read_chosen

    states = sd.all_states()
    out: dict[str, TrainConfig | None] = {}
    for u in units(spec):
        done = (states.get("tune-" + u.key) or {}).get("state") == "done"
        out[u.key] = read_chosen(sd, u) if done else None
    return out


def _pending(jobs: list[Job], sd: StudyDir, retry_failed: bool) -> list[Job]:
    wanted = []
    for job in jobs:
        state = (sd.read(job.key) or {}).get("state")
        if state == "done" or (state == "failed" and not retry_failed):
            continue
        wanted.append(job)
    return wanted


def _count(jobs: list[Job], sd: StudyDir, outcome: StudyOutcome) -> None:
    for job in jobs:
        state = sd.read(job.key) or {}
        if state.get("state") == "done":
            outcome.done += 1
        elif state.get("state") == "failed":
            outcome.failed += 1
            outcome.failures.append((f"{job.kind} {job.method} {job.info.get('task')} fold {job.info.get('fold')}",
                                     str(state.get("error"))))
        else:
            outcome.unfinished += 1


def _execute_phase(jobs: list[Job], sd: StudyDir, ctx: JobContext, backend: Any) -> None:
    """The phase's unfinished jobs on the backend; then, in this process, wait for those another ``study run``
    process was running (skipped above): it finishes them, or, if it died, they run here."""
    backend.execute(_pending(jobs, sd, ctx.retry_failed), ctx)
    busy = [job for job in _pending(jobs, sd, ctx.retry_failed) if sd.held(job.key)]
    if busy:
        log.info("waiting for %d job(s) running in another process", len(busy))
    for job in busy:
        execute_job(job, replace(ctx, wait=True))


def run_study(spec: StudySpec, ws: Workspace, backend: Any, retry_failed: bool = False, device: str = "auto") -> StudyOutcome:
    """All three phases (in each store's workspace when the study names stores); returns what is done, failed
    and unfinished."""
    from mmfair.core.pipeline import _require_data

    _require_data(ws)
    if spec.stores:
        return _run_stores(spec, ws, backend, retry_failed, device)
    return _run_grid(spec, ws, backend, retry_failed, device)


def _run_stores(spec: StudySpec, ws: Workspace, backend: Any, retry_failed: bool, device: str) -> StudyOutcome:
    """Each store: prepared (or reused), then the whole grid in its workspace. A store whose prep fails counts
    as one failed job and the other stores go on."""
    from mmfair.core.study.stores import main_prep_config, prep_job_key, prepare_store, store_workspace

    main_prep_config(ws)  # no recorded prep settings: every store would fail the same way, so stop here
    sd = StudyDir.of(ws, spec.name)
    sd.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(sd.root / "study.json", spec.model_dump(mode="json"))
    grid = spec.model_copy(update={"stores": {}})
    outcome = StudyOutcome(evaluated=True)
    for name in spec.stores:
        if not prepare_store(spec, ws, name, retry_failed):
            outcome.failed += 1
            outcome.evaluated = False
            outcome.failures.append((f"store {name}: prep", str((sd.read(prep_job_key(name)) or {}).get("error"))))
            continue
        store = store_workspace(ws, name)
        part = _run_grid(grid, store, backend, retry_failed, device)
        outcome.done += part.done + 1  # + its prep
        outcome.failed += part.failed
        outcome.unfinished += part.unfinished
        outcome.evaluated = outcome.evaluated and part.evaluated
        outcome.failures += [(f"store {name}: {what}", error) for what, error in part.failures]
        outcome.stores[name] = store.root
    return outcome


def _run_grid(spec: StudySpec, ws: Workspace, backend: Any, retry_failed: bool, device: str) -> StudyOutcome:
    """The three phases of ``spec``'s grid in ``ws`` (the main workspace, or one store's)."""
    sd = StudyDir.of(ws, spec.name)
    sd.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(sd.root / "study.json", spec.model_dump(mode="json"))
    ctx = JobContext(ws.root, spec, retry_failed, device)

    tuning = tune_jobs(spec)
    _execute_phase(tuning, sd, ctx, backend)
    finals = final_jobs(spec, chosen_configs(spec, sd))
    write_json_atomic(sd.final_runs, [{"key": j.key, "method": j.method, "config": j.config.model_dump(mode="json")}
                                      for j in finals])
    _execute_phase(finals, sd, ctx, backend)

    outcome = StudyOutcome()
    _count(tuning, sd, outcome)
    _count(finals, sd, outcome)
    listed = {j.unit.key for j in finals}
    for u in units(spec):  # a unit still tuning (not one whose tuning failed) has its final runs ahead of it
        if u.key not in listed and (sd.read("tune-" + u.key) or {}).get("state") != "failed":
            outcome.unfinished += len(spec.seeds)
    if outcome.unfinished == 0:
        outcome.evaluated = evaluate(spec, ws, sd, finals, device)
    return outcome


def evaluate(spec: StudySpec, ws: Workspace, sd: StudyDir, finals: list[Job], device: str) -> bool:
    """Phase 3 (in this process: it rewrites whole results tables): the study's eval-missing and eval-fair
    settings on its finished final runs; skipped when the same settings already ran on the same runs."""
    run_ids = sorted({str((sd.read(j.key) or {}).get("run_id")) for j in finals
                      if (sd.read(j.key) or {}).get("state") == "done"})
    if not run_ids or not (spec.eval_missing or spec.eval_fair):
        return bool(run_ids)
    eval_missing, eval_fair = _with_study_references(spec)
    payload = {"runs": run_ids, "missing": [c.model_dump(mode="json") for c in eval_missing],
               "fair": eval_fair.model_dump(mode="json") if eval_fair else None}
    key = "eval-" + config_hash(payload)
    with sd.lock(key):  # another `study run` process evaluating the same runs: wait, then skip
        if (sd.read(key) or {}).get("state") != "done":
            _evaluate_locked(ws, sd, key, run_ids, eval_missing, eval_fair, device)
    return True


def _evaluate_locked(ws: Workspace, sd: StudyDir, key: str, run_ids: list[str], eval_missing: list[Any], eval_fair: Any,
                     device: str) -> None:
    from mmfair.core import pipeline

    sd.write(key, state="running", kind="eval", method="(evaluation)")
    started = time.time()
    for cfg in eval_missing:
        pipeline.eval_missing(cfg.model_copy(update={"device": device}), ws, run_ids=run_ids)
    if eval_fair is not None:
        pipeline.eval_fair(eval_fair.model_copy(update={"device": device}), ws, run_ids=run_ids)
    sd.write(key, state="done", kind="eval", method="(evaluation)", seconds=time.time() - started, n_runs=len(run_ids))


def _with_study_references(spec: StudySpec) -> tuple[list[Any], Any]:
    """The study's eval-missing and eval-fair settings with each reference method named as the study labels its
    final runs (``late`` → ``late[tuned]`` in a tuned study), so the comparisons find their reference runs."""
    missing = [c.model_copy(update={"reference": study_label(spec, c.reference)}) for c in spec.eval_missing]
    fair = spec.eval_fair
    if fair is not None and fair.reference:
        fair = fair.model_copy(update={"reference": study_label(spec, fair.reference)})
    return missing, fair


# ---- status -----------------------------------------------------------------------------------------------
def study_status(spec: StudySpec, ws: Workspace) -> dict[str, Any]:
    """Per method: jobs done / running / failed / pending (tuning and final runs), an ETA from the observed
    throughput, and each unit's tuning choice. A study with stores has one row per store and method (and one
    ``(prep)`` row per store), with a ``store`` column first."""
    if spec.stores:
        return _stores_status(spec, ws)
    return _grid_status(spec, ws)


def _stores_status(spec: StudySpec, ws: Workspace) -> dict[str, Any]:
    import pandas as pd

    from mmfair.core.study.stores import prep_job_key, store_folders, store_workspace

    sd = StudyDir.of(ws, spec.name)
    grid = spec.model_copy(update={"stores": {}})
    tables, chosen, out = [], [], {"total": 0, "done": 0, "eta_seconds": None, "missing_finals": 0, "folder": sd.root}
    for name in spec.stores:
        part = _grid_status(grid, store_workspace(ws, name))
        prep = sd.read(prep_job_key(name)) or {}
        state = prep.get("state", "pending")
        state = "pending" if state == "running" and not alive(prep) else state
        row = {"method": "(prep)", "done": 0, "running": 0, "failed": 0, "pending": 0, "total": 1, state: 1}
        tables.append(pd.concat([pd.DataFrame([row]), part["table"]], ignore_index=True).assign(store=name))
        chosen.append(part["chosen"].assign(store=name))
        out["total"] += part["total"] + 1
        out["done"] += part["done"] + (state == "done")
        out["missing_finals"] += part["missing_finals"]
        if part["eta_seconds"] is not None:
            out["eta_seconds"] = (out["eta_seconds"] or 0.0) + part["eta_seconds"]
    return {**out, "table": _store_first(pd.concat(tables, ignore_index=True)),
            "chosen": _store_first(pd.concat(chosen, ignore_index=True)), "stores": store_folders(spec, ws)}


def _store_first(frame: Any) -> Any:
    return frame[["store", *[c for c in frame.columns if c != "store"]]] if "store" in frame.columns else frame


def _grid_status(spec: StudySpec, ws: Workspace) -> dict[str, Any]:
    import pandas as pd

    sd = StudyDir.of(ws, spec.name)
    states = sd.all_states()
    expected: list[tuple[str, str, str]] = [(j.key, j.method, "tune") for j in tune_jobs(spec)]
    finals = {j.key: j for j in final_jobs(spec, chosen_configs(spec, sd))}
    expected += [(k, j.method, "train") for k, j in finals.items()]
    n_final = len(units(spec)) * len(spec.seeds)
    missing_finals = n_final - len(finals)  # units still tuning: their final runs are not listed yet
    rows: dict[str, dict[str, int]] = {}
    starts, seconds = [], []
    for key, method, _ in expected:
        st = states.get(key) or {}
        s = st.get("state", "pending")
        if s == "running" and not alive(st):
            s = "pending"  # killed: runs again on the next `study run`
        row = rows.setdefault(method, {"done": 0, "running": 0, "failed": 0, "pending": 0})
        row[s] = row.get(s, 0) + 1
        if s == "done" and st.get("seconds") is not None:
            seconds.append(float(st["seconds"]))
            starts.append(float(st["time"]) - float(st["seconds"]))
    per_unit_pending = {}
    for u in units(spec):
        if not any(j.unit.key == u.key for j in finals.values()):
            per_unit_pending[u.method] = per_unit_pending.get(u.method, 0) + len(spec.seeds)
    for method, n in per_unit_pending.items():
        rows.setdefault(method, {"done": 0, "running": 0, "failed": 0, "pending": 0})["pending"] += n
    table = pd.DataFrame([{"method": m, **r, "total": sum(r.values())} for m, r in rows.items()])
    total = int(table["total"].sum()) if len(table) else 0
    done = int(table["done"].sum()) if len(table) else 0
    eta = None
    remaining = total - done - (int(table["failed"].sum()) if len(table) else 0)
    if seconds and remaining > 0:
        elapsed = max(time.time() - min(starts), 1e-9)
        eta = elapsed / len(seconds) * remaining
    chosen = []
    for u in units(spec):
        path = sd.tuning / u.key / "chosen.json"
        if path.exists():
            data = json.loads(path.read_text())
            chosen.append({"method": u.method, "label": data.get("label") or tuned_label(u.base), "task": u.base.task,
                           "fold": u.base.fold, "modalities": u.modalities, "budget": data.get("budget"),
                           "complete": data.get("n_complete"),
                           "best_trial": data.get("best_index"), "objective": data.get("objective"),
                           "value": data.get("value"), "params": json.dumps(data.get("params"), sort_keys=True)})
    return {"table": table, "total": total, "done": done, "eta_seconds": eta, "chosen": pd.DataFrame(chosen),
            "missing_finals": missing_finals, "folder": sd.root}
