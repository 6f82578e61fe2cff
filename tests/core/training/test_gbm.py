"""The tree baselines (gbm-ehr, gbm-early, gbm-late): features, run folders, absence, determinism, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tiny_workspace import build_tiny_workspace
from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.evaluation import metrics as M
from mmfair.core.fusion._gbm import feature_names, window_features
from mmfair.core.training.run_files import RUN_FILES
from mmfair.core.training.runs import load_run, predict, train_run

nan = np.nan


def test_window_features_by_hand():
    values = np.array([[[nan, 7.0], [2.0, nan], [nan, nan], [5.0, nan]]], dtype=np.float32)  # [1, T=4, F=2]
    x = window_features(values, (4, 2))
    names = feature_names(("a", "b"), (4, 2))
    got = dict(zip(names, x[0]))
    assert (got["a_last_4h"], got["a_min_4h"], got["a_max_4h"], got["a_mean_4h"], got["a_count_4h"]) == (5, 2, 5, 3.5, 2)
    assert (got["a_last_2h"], got["a_min_2h"], got["a_mean_2h"], got["a_count_2h"]) == (5, 5, 5, 1)
    assert (got["b_last_4h"], got["b_count_4h"]) == (7, 1)
    assert all(np.isnan(got[f"b_{s}_2h"]) for s in ("last", "min", "max", "mean")) and got["b_count_2h"] == 0


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_tiny_workspace(tmp_path_factory.mktemp("gbm") / "ws", n_stays=400)


def _config(fusion: str, **kw) -> TrainConfig:
    return TrainConfig(fusion=fusion, device="cpu", **kw)


def _read(path):
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


@pytest.mark.parametrize("fusion", ["gbm-ehr", "gbm-early", "gbm-late"])
def test_run_folder_reload_and_planted_signal(ws, fusion):
    result = train_run(_config(fusion), ws)
    assert all((result.run_dir / f).exists() for f in RUN_FILES)
    run = load_run(result.run_dir)
    pd.testing.assert_frame_equal(predict(run, "test"), _read(result.run_dir / "predictions_test.csv"))
    test = _read(result.run_dir / "predictions_test.csv")
    assert test["score"].between(0, 1).all()  # every stay scored, absent CXR included
    # mortality depends on EHR feature 0 (all stays) and CXR dim 0 (stays with a CXR)
    assert M.auroc(test["label"], test["score"]) > 0.7
    assert train_run(_config(fusion), ws).skipped


def test_absent_cxr_is_nan_for_the_trees(ws):
    early = load_run(train_run(_config("gbm-early"), ws).run_dir)
    late = load_run(train_run(_config("gbm-late"), ws).run_dir)
    ehr = load_run(train_run(_config("gbm-ehr"), ws).run_dir)
    base = predict(early, "test")
    with_cxr = base["present_cxr"].to_numpy() == 1
    removed = predict(early, "test", {"cxr": np.zeros(len(base), dtype=bool)})
    assert (removed["present_cxr"] == 0).all()
    assert np.array_equal(removed["score"][~with_cxr], base["score"][~with_cxr])  # natural absence = removal
    assert not np.array_equal(removed["score"][with_cxr], base["score"][with_cxr])
    # late: without a CXR, the EHR tree alone; placeholders in the embedding rows of absent stays are never read
    late_removed = predict(late, "test", {"cxr": np.zeros(len(base), dtype=bool)})
    ehr_tree = late.model._proba("ehr", late.model.features(_arrays(late), ("ehr",)))[:, 0]
    np.testing.assert_allclose(late_removed["score"], ehr_tree, rtol=0, atol=1e-9)
    arrays = _arrays(early)
    scrambled = _arrays(early)
    scrambled.cxr[~scrambled.present_cxr] = 1e6
    assert np.array_equal(early.model.predict_proba(arrays), early.model.predict_proba(scrambled))
    # an EHR perturbation reaches the trees' raw values: nothing observed → one leaf path for every stay
    blank = predict(ehr, "test", ehr_transform=lambda v, f: np.full_like(v, np.nan))
    assert blank["score"].nunique() == 1


def _arrays(run):
    from mmfair.core.training.data import run_rows
    from mmfair.core.training.estimators import _labels, fold_arrays

    rows = run_rows(run.store, run.config.fold)["test"]
    return fold_arrays(run.store, rows, _labels(run.task, run.store))


def test_same_seed_same_predictions_in_another_workspace(ws, tmp_path):
    other = build_tiny_workspace(tmp_path / "other", n_stays=400)
    a = train_run(_config("gbm-early", seed=3), ws)
    b = train_run(_config("gbm-early", seed=3), other)
    assert (a.run_dir / "predictions_test.csv").read_text() == (b.run_dir / "predictions_test.csv").read_text()


def test_phenotype_and_los(ws):
    pheno = _read(train_run(_config("gbm-late", task="phenotype"), ws).run_dir / "predictions_test.csv")
    assert sum(c.startswith("score_") for c in pheno.columns) == 25
    los = _read(train_run(_config("gbm-ehr", task="los"), ws).run_dir / "predictions_test.csv")
    probs = los[[f"score_{k}" for k in range(7)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("option", [dict(modulator="group-dro"), dict(class_weights="balanced"),
                                    dict(modality_dropout=0.3), dict(selection_rules=("worst_group",))])
def test_neural_only_options_are_refused(ws, option):
    before = set(ws.runs.iterdir()) if ws.runs.exists() else set()
    with pytest.raises(ConfigError, match="tree estimator"):
        train_run(_config("gbm-early", **option), ws)
    assert (set(ws.runs.iterdir()) if ws.runs.exists() else set()) == before  # no folder left behind


def test_every_evaluation_and_the_report_take_the_trees(tmp_path):
    from mmfair.core import pipeline
    from mmfair.core.config import EvalFairConfig, EvalMissingConfig, ReportConfig

    ws = build_tiny_workspace(tmp_path / "ws", n_stays=300)
    cfgs = [_config("gbm-early"), _config("gbm-late"), TrainConfig(fusion="late", epochs=1, hidden_dim=8, device="cpu")]
    pipeline.train(cfgs, ws, bootstrap=0)
    pipeline.eval_missing(EvalMissingConfig(rates=(0.5,), draws=1, bootstrap=0, device="cpu"), ws)
    pipeline.eval_missing(EvalMissingConfig(mechanism="ehr_last_hours", hours=12, bootstrap=0, device="cpu"), ws)
    pipeline.eval_fair(EvalFairConfig(bootstrap=0, permutations=0, device="cpu", min_group_size=1), ws)
    missing = pd.read_csv(ws.missing_csv, keep_default_na=False)
    assert {"gbm-early", "gbm-late"} <= set(missing["method"])
    assert {"ehr_last_hours"} <= set(missing.loc[missing.method == "gbm-early", "scenario"])
    metrics = pd.read_csv(ws.metrics_csv, keep_default_na=False)
    cost = metrics[(metrics.method == "gbm-early") & metrics.metric.isin(["n_params", "infer_stays_per_s"])]
    assert set(cost.metric) == {"n_params", "infer_stays_per_s"}
    fairness = pd.read_csv(ws.fairness_csv, keep_default_na=False)
    assert "gbm-late" in set(fairness.loc[fairness.metric == "auroc_difference", "method"])  # paired with late
    tables = pipeline.report_tables(ReportConfig(min_group_size=1), ws)
    assert any("gbm-early" in t.to_string() for t in tables.values())
