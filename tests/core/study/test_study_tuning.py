"""Tuning is per outer fold and validation-only: permuting fold k's TEST labels leaves fold k's trials and
choice bit-identical. A trial left RUNNING by a kill is re-queued with its parameters, and the search ends
where an uninterrupted one does."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _tiny import TINY_STUDY, build_tiny_workspace
from mmfair.core.study import parse_study
from mmfair.core.study.jobs import units
from mmfair.core.study.state import StudyDir
from mmfair.core.study.tuning import objective, storage, tune_unit

FOLDS = [0, 1, 2, 3, 4]


def _spec(**over):
    return parse_study({**TINY_STUDY, "methods": ["late"], "seeds": [0], "folds": FOLDS,
                        "tuning": {"trials": 3, "startup_trials": 1, "generic": ["lr", "dropout"]}, **over})


def _trials(sd: StudyDir, key: str) -> pd.DataFrame:
    frame = pd.read_csv(sd.tuning / key / "trials.csv")
    frame = frame[~frame["interrupted"]]  # a killed trial is not part of the search
    frame = frame[["index", "state", "value", "params"]].astype({"index": int})
    return frame.sort_values("index").reset_index(drop=True)


def _chosen(sd: StudyDir, key: str) -> dict:
    data = json.loads((sd.tuning / key / "chosen.json").read_text())
    return {k: data[k] for k in ("best_index", "value", "params", "config")}


def _permute_test_labels(ws, fold: int, seed: int = 1) -> None:
    cohort = pd.read_csv(ws.cohort_csv, keep_default_na=False)
    rows = np.flatnonzero(cohort["fold"].to_numpy() == fold)
    labels = cohort.loc[rows, "mortality"].to_numpy()
    permuted = np.random.default_rng(seed).permutation(labels)
    assert (permuted != labels).any()
    cohort.loc[rows, "mortality"] = permuted
    cohort.to_csv(ws.cohort_csv, index=False)


def test_permuted_test_labels_leave_trials_and_choice_identical(tmp_path):
    spec = _spec()
    base_ws = build_tiny_workspace(tmp_path / "base")
    base_sd = StudyDir.of(base_ws, spec.name)
    by_fold = {u.base.fold: u for u in units(spec)}
    for k in FOLDS:
        tune_unit(by_fold[k], base_ws, base_sd, spec.tuning, device="cpu")
    values = []
    for k in FOLDS:
        ws = build_tiny_workspace(tmp_path / f"permuted{k}")
        _permute_test_labels(ws, k)
        sd = StudyDir.of(ws, spec.name)
        tune_unit(by_fold[k], ws, sd, spec.tuning, device="cpu")
        key = by_fold[k].key
        pd.testing.assert_frame_equal(_trials(sd, key), _trials(base_sd, key), check_exact=True)
        assert _chosen(sd, key) == _chosen(base_sd, key)
        values.append(_trials(base_sd, key)["value"].tolist())
    trials = _trials(base_sd, by_fold[0].key)
    assert trials["index"].tolist() == [0, 1, 2] and (trials["state"] == "COMPLETE").all()
    # trial 0 is the default configuration
    assert json.loads(trials["params"][0]) == {"dropout": 0.2, "lr": 0.001}
    # each outer fold is tuned on its own validation fold: the searches differ
    assert len({tuple(v) for v in values}) == len(FOLDS)


def test_objective_reads_validation_only(tmp_path):
    """The objective of a run folder is computed from predictions_val.csv, by hand here."""
    run = tmp_path / "run"
    run.mkdir()
    val = pd.DataFrame({"stay_id": [1, 2, 3, 4, 5], "label": [1, 0, 1, 0, 0], "score": [0.9, 0.8, 0.7, 0.1, np.nan],
                        "race_group": ["A", "A", "B", "B", "B"]})
    val.to_csv(run / "predictions_val.csv", index=False)
    pd.DataFrame({"stay_id": [9], "label": [1], "score": ["not a number"]}).to_csv(run / "predictions_test.csv", index=False)
    spec = _spec()
    # ranking 1(0.9) 0(0.8) 1(0.7) 0(0.1): AP = 1/2 · (1/1) + 1/2 · (2/3) = 5/6
    assert objective(run, spec.tuning) == pytest.approx(5 / 6)
    fair = spec.tuning.model_copy(update={"objective": "auroc"})
    assert objective(run, fair) == pytest.approx(0.75)


def test_interrupted_trial_is_requeued_with_its_parameters(tmp_path):
    import optuna
    from optuna.trial import TrialState

    spec = _spec(folds=[0])
    unit = units(spec)[0]
    ws_a = build_tiny_workspace(tmp_path / "a")
    sd_a = StudyDir.of(ws_a, spec.name)
    tune_unit(unit, ws_a, sd_a, spec.tuning, device="cpu")

    ws_b = build_tiny_workspace(tmp_path / "b")
    sd_b = StudyDir.of(ws_b, spec.name)
    one = spec.tuning.model_copy(update={"trials": 1})
    tune_unit(unit, ws_b, sd_b, one, device="cpu")
    # a process that asked for trial 1, drew its values as tune_unit does, and was killed before telling
    from optuna.samplers import TPESampler

    from mmfair.core.study.space import suggest
    from mmfair.core.study.tuning import _trial_seed

    study = optuna.load_study(study_name=unit.key, storage=storage(sd_b))
    study.sampler = TPESampler(seed=_trial_seed(spec.tuning.seed, unit.key, 1), n_startup_trials=spec.tuning.startup_trials)
    killed = study.ask()
    drawn = suggest(killed, unit.space)
    assert study.get_trials(states=(TrialState.RUNNING,))
    tune_unit(unit, ws_b, sd_b, spec.tuning, device="cpu")
    frame = pd.read_csv(sd_b.tuning / unit.key / "trials.csv")
    assert frame["interrupted"].sum() == 1 and (frame["state"] == "RUNNING").sum() == 0
    counted = frame[~frame["interrupted"]].sort_values("number")
    assert json.loads(counted["params"].iloc[1]) == drawn  # re-queued with the same parameters
    # and the search ends exactly where the uninterrupted one did
    pd.testing.assert_frame_equal(_trials(sd_b, unit.key),
                                  _trials(sd_a, unit.key), check_exact=True)
    assert _chosen(sd_b, unit.key) == _chosen(sd_a, unit.key)
