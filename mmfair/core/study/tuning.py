"""Phase 1: equal-budget tuning of one unit (method × task × fold × setting) on that fold's validation only.

Fold k's validation fold is fold k+1's test fold, so a unit is tuned for each outer fold separately and its
choice is never reused across folds; the objective reads only ``predictions_val.csv``. Every unit gets the
same number of trials; trial 0 is the method's default configuration; then Optuna's TPE sampler, seeded per
trial index (``tuning.seed``, unit, index), so the draws depend only on the finished trials before them —
a search resumed after a kill draws what an uninterrupted one would. No pruning: a median rule would penalise
methods that improve late (OGM-GE's and InfoReg's windows).

Trials live in an Optuna JournalStorage file on the workspace filesystem (``optuna.journal``; one Optuna study
per unit), which several processes and nodes may share. Trial runs are kept apart from the study's results
(``trial_runs/``), so ``eval-missing``/``eval-fair`` never see them. A trial left RUNNING by a kill is marked
failed (``interrupted``, not counted) and re-queued with the same parameters; a trial that raises is FAIL with
its one-line error and counts toward the budget (the method had its chance).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError, MmfairError
from mmfair.core.io import write_csv_atomic, write_json_atomic
from mmfair.core.study.jobs import Unit, tuned_label
from mmfair.core.study.spec import Tuning
from mmfair.core.study.state import StudyDir
from mmfair.core.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialWorkspace(Workspace):
    """The study's workspace with run folders under the study's ``trial_runs/`` (same prepared data)."""

    trial_runs: Path = Path("trial_runs")

    @property
    def runs(self) -> Path:  # type: ignore[override]
        return self.trial_runs


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, MmfairError) else f"{type(exc).__name__}: {text}"


# ---- objective (validation predictions only) -------------------------------------------------------
def _targets(pred: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    from mmfair.core.evaluation.run_folder import task_spec

    spec = task_spec(pred)
    if spec.kind == "multiclass":
        labels = pred["label"].to_numpy()
        return [((labels == k).astype(int), pred[c].to_numpy(dtype=float)) for k, c in enumerate(spec.class_columns)]
    return [(pred[lab].to_numpy(), pred[score].to_numpy(dtype=float)) for _, lab, score in spec.targets]


def objective(run_dir: Path, tuning: Tuning) -> float:
    """The unit's validation objective: AUPRC or AUROC (macro over labels / one-vs-rest classes) of the scorable
    validation stays; ``auprc-fair`` subtracts ``fair_weight`` × the largest minus smallest group AUROC."""
    from mmfair.core.evaluation.metrics import auprc, auroc
    from mmfair.core.evaluation.run_folder import read_predictions

    pred = read_predictions(run_dir, "val")
    metric = auroc if tuning.objective == "auroc" else auprc
    values, gaps = [], []
    for y, s in _targets(pred):
        ok = ~np.isnan(s)
        values.append(float(metric(y[ok], s[ok])))
        if tuning.objective == "auprc-fair":
            gaps.append(_auroc_gap(y[ok], s[ok], pred[tuning.fair_attr].astype(str).to_numpy()[ok], tuning.min_group_size))
    value = float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else math.nan
    if gaps:
        value -= tuning.fair_weight * float(np.nanmean(gaps) if not all(math.isnan(g) for g in gaps) else 0.0)
    return value


def _auroc_gap(y: np.ndarray, s: np.ndarray, groups: np.ndarray, min_size: int) -> float:
    from mmfair.core.evaluation.metrics import auroc

    per = [float(auroc(y[groups == g], s[groups == g])) for g in np.unique(groups) if (groups == g).sum() >= min_size]
    per = [v for v in per if not math.isnan(v)]
    return max(per) - min(per) if len(per) >= 2 else math.nan


# ---- the search -------------------------------------------------------------------------------------
def _trial_seed(seed: int, unit: str, index: int) -> int:
    return int(hashlib.sha256(f"{seed}:{unit}:{index}".encode()).hexdigest()[:8], 16)


def _counted(trials: list) -> list:
    from optuna.trial import TrialState

    return [t for t in trials if t.state == TrialState.COMPLETE
            or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))]


def storage(sd: StudyDir):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    sd.root.mkdir(parents=True, exist_ok=True)
    path = str(sd.journal)
    # the open-lock works on network filesystems (NFS), where Slurm nodes share the workspace
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def _recover_interrupted(study, store) -> None:
    """Trials left RUNNING by a killed process (the unit lock is ours, so nobody else runs them): FAIL +
    ``interrupted``, and the same parameters queued again."""
    from optuna.trial import TrialState

    study_id = store.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = store.get_trial_id_from_study_id_trial_number(study_id, t.number)
        store.set_trial_user_attr(trial_id, "interrupted", True)
        store.set_trial_state_values(trial_id, TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs={"requeued_from": t.number}, skip_if_exists=False)
        log.info("unit %s: trial %d was interrupted; queued again with the same parameters", study.study_name, t.number)


def tune_unit(unit: Unit, ws: Workspace, sd: StudyDir, tuning: Tuning, device: str = "auto") -> dict[str, Any]:
    """Run the unit's search to its budget (resuming a partial one) and write its trials and choice."""
    import optuna
    from filelock import FileLock
    from optuna.samplers import TPESampler
    from optuna.trial import TrialState

    from mmfair.core.study.space import apply, defaults, suggest
    from mmfair.core.training import train_run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_ws = TrialWorkspace(ws.root, trial_runs=sd.trial_runs)
    (sd.tuning / unit.key).mkdir(parents=True, exist_ok=True)
    store = storage(sd)
    with FileLock(str(sd.tuning / unit.key / "lock")):
        study = optuna.create_study(study_name=unit.key, storage=store, direction="maximize", load_if_exists=True)
        _recover_interrupted(study, store)
        if not study.trials:
            study.enqueue_trial(defaults(unit.base, unit.space), user_attrs={"default": True})
        while len(done := _counted(study.get_trials(deepcopy=False))) < tuning.trials:
            study.sampler = TPESampler(seed=_trial_seed(tuning.seed, unit.key, len(done)),
                                       n_startup_trials=tuning.startup_trials)
            trial = study.ask()
            trial.set_user_attr("index", len(done))
            try:
                config = apply(unit.base, suggest(trial, unit.space)).model_copy(update={"device": device})
                result = train_run(config, trial_ws)
                trial.set_user_attr("run_id", result.run_id)
                value = objective(result.run_dir, tuning)
                if math.isnan(value):
                    raise ConfigError(f"validation {tuning.objective} is undefined (one class on validation?)")
            except Exception as exc:  # noqa: BLE001 - a failing configuration is a result of the search
                trial.set_user_attr("error", one_line(exc))
                study.tell(trial, state=TrialState.FAIL)
                log.warning("unit %s (%s) trial %d failed: %s", unit.key, unit.method, len(done), one_line(exc))
                continue
            study.tell(trial, value)
        return write_outcome(unit, study, sd, tuning)


def trials_frame(study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "index": t.user_attrs.get("index"), "state": t.state.name,
                     "value": t.value if t.values else None, "params": json.dumps(t.params, sort_keys=True),
                     "default": bool(t.user_attrs.get("default", False)), "interrupted": bool(t.user_attrs.get("interrupted", False)),
                     "run_id": t.user_attrs.get("run_id"), "error": t.user_attrs.get("error")})
    return pd.DataFrame(rows)


def write_outcome(unit: Unit, study, sd: StudyDir, tuning: Tuning) -> dict[str, Any]:
    from optuna.trial import TrialState

    from mmfair.core.study.space import apply

    counted = _counted(study.get_trials(deepcopy=False))
    complete = [t for t in counted if t.state == TrialState.COMPLETE]
    outcome: dict[str, Any] = {"unit": unit.key, "method": unit.method, "label": tuned_label(unit.base),
                               "task": unit.base.task, "fold": unit.base.fold,
                               "modalities": unit.modalities, "objective": tuning.objective, "budget": tuning.trials,
                               "n_complete": len(complete), "n_failed": len(counted) - len(complete)}
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.user_attrs["index"]))  # ties: the earlier trial
        chosen = apply(unit.base, best.params)
        outcome.update(best_index=best.user_attrs["index"], value=best.value, params=dict(best.params),
                       config=chosen.model_dump(mode="json"))
    write_csv_atomic(sd.tuning / unit.key / "trials.csv", trials_frame(study))
    write_json_atomic(sd.tuning / unit.key / "chosen.json", outcome)
    if not complete:
        raise ConfigError(f"every one of the {tuning.trials} trials of {unit.method} ({unit.base.task}, fold "
                          f"{unit.base.fold}) failed; see {sd.tuning / unit.key / 'trials.csv'}")
    return outcome


def read_chosen(sd: StudyDir, unit: Unit) -> TrainConfig | None:
    path = sd.tuning / unit.key / "chosen.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return TrainConfig.model_validate(data["config"]) if "config" in data else None
