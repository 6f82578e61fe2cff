"""Every non-empty subset of {ehr, cxr, static} trains: runs without the hourly EHR variables (``hourly_ehr``
False: ``--modalities static`` and ``cxr,static``) feed the EHR branch the static channels only, reload and
predict as saved, and give modality Shapley values over three players whose sum is v(N) − 0.5."""

from __future__ import annotations

import json
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from mmfair.core.config import EvalMissingConfig, TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training.runs import compute_run_id

FIELDS = ("age", "admission_type")  # the tiny workspace has no admission_location / first_careunit


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "patience": 2, "hidden_dim": 16, "batch_size": 32, "device": "cpu", **kw})


def read(run_dir, name: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / name, keep_default_na=False, na_values=[""])


def test_switching_hourly_ehr_off_changes_the_run_id():
    on = compute_run_id(TrainConfig(fusion="late", static_fields=FIELDS), "fp")
    off = TrainConfig(fusion="late", static_fields=FIELDS, hourly_ehr=False)
    assert off.identity()["hourly_ehr"] is False and compute_run_id(off, "fp") != on


def test_no_hourly_ehr_needs_static_fields_and_an_ehr_branch(tiny_ws):
    with pytest.raises(ValidationError, match="needs static_fields"):
        TrainConfig(fusion="ehr", hourly_ehr=False)
    with pytest.raises(ConfigError, match="no EHR branch"):
        train_run(config(fusion="cxr", static_fields=FIELDS), tiny_ws)


def test_static_only_run_trains_reloads_and_removes_only_static(tiny_ws):
    result = train_run(config(fusion="ehr", static_fields=FIELDS, hourly_ehr=False), tiny_ws)
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["modalities"] == ["static"] and info["hourly_ehr"] is False and info["method"] == "ehr"
    scaling = json.loads((result.run_dir / "scaling.json").read_text())
    assert scaling["ehr"] is None and scaling["static"]["fields"] == list(FIELDS)
    run = load_run(result.run_dir)
    ehr = run.split("test").inputs["ehr"]
    width = run.scaler.static_width
    assert width == len(scaling["static"]["feature_names"]) and ehr.shape[2] == 2 * width  # values ‖ mask, no hourly
    assert bool((ehr[:, :, width:] == 1).all()) and bool((ehr == ehr[:, :1]).all())  # observed, constant in time
    saved = read(result.run_dir, "predictions_test.csv")
    assert (saved["present_ehr"] == 0).all() and (saved["present_static"] == 1).all()
    again = predict(run, "test")
    np.testing.assert_allclose(again["score"], saved["score"], rtol=1e-5)
    assert (again["present_ehr"] == 0).all()
    n = len(saved)
    # no hourly EHR: nothing to remove or perturb
    np.testing.assert_array_equal(predict(run, "test", {"ehr": np.ones(n, dtype=bool)})["score"], again["score"])
    np.testing.assert_array_equal(predict(run, "test", ehr_transform=lambda v, f: v * np.nan)["score"], again["score"])
    with pytest.raises(ConfigError, match="no hourly EHR"):
        predict(run, "test", {"ehr": np.zeros(n, dtype=bool)})
    keep = np.ones(n, dtype=bool)
    keep[::2] = False
    removed = predict(run, "test", {"static": keep})
    assert (removed.loc[~keep, "present_static"] == 0).all()
    np.testing.assert_array_equal(removed.loc[keep, "score"], again.loc[keep, "score"])
    # with its fields removed every stay has the same all-zero input, hence one score
    assert removed.loc[~keep, "score"].nunique() == 1


def test_cxr_static_run_trains_the_fusion_and_reloads(tiny_ws):
    result = train_run(config(fusion="late", static_fields=FIELDS, hourly_ehr=False), tiny_ws)
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["modalities"] == ["cxr", "static"] and info["method"] == "late"
    saved = read(result.run_dir, "predictions_test.csv")
    assert (saved["present_ehr"] == 0).all() and (saved["present_static"] == 1).all()
    assert set(saved["present_cxr"]) == {0, 1}
    run = load_run(result.run_dir)
    assert run.split("test").inputs["ehr"].shape[2] == 2 * run.scaler.static_width  # the static channels only
    np.testing.assert_allclose(predict(run, "test")["score"], saved["score"], rtol=1e-5)


def test_eval_missing_on_a_run_without_hourly_ehr(tiny_ws):
    from mmfair.core.evaluation import evaluate_missing
    from mmfair.core.pipeline import make_predict_fn

    run = train_run(config(fusion="ehr", static_fields=FIELDS, hourly_ehr=False), tiny_ws)
    predict_fn = make_predict_fn("cpu")

    def auroc(modality):
        rows = evaluate_missing([run.run_dir], EvalMissingConfig(mechanism="mcar", modality=modality, rates=(0.5,),
                                                                 bootstrap=0, draws=1), predict_fn)  # fmt: skip
        return rows[(rows["metric"] == "auroc") & (rows["label"] == "all")]

    assert not auroc("ehr")["defined"].any()  # no hourly EHR: nothing to remove, rows undefined
    static = auroc("static")
    assert static["defined"].all() and sorted(static["missing_rate"]) == [0.0, pytest.approx(0.5, abs=0.03)]


def test_three_player_shapley_from_trained_subset_runs(tiny_ws):
    from mmfair.core.evaluation.shapley import evaluate_shapley
    from mmfair.core.reporting.robustness import shapley_table

    plan = {  # subset -> (method, static fields, hourly EHR)
        ("ehr",): ("ehr", (), True), ("cxr",): ("cxr", (), True), ("static",): ("ehr", FIELDS, False),
        ("ehr", "cxr"): ("late", (), True), ("ehr", "static"): ("ehr", FIELDS, True),
        ("cxr", "static"): ("late", FIELDS, False), ("ehr", "cxr", "static"): ("late", FIELDS, True),
    }  # fmt: skip
    runs = {}
    for subset, (method, fields, hourly) in plan.items():
        runs[subset] = train_run(config(fusion=method, static_fields=fields, hourly_ehr=hourly), tiny_ws).run_dir
        modalities = json.loads((runs[subset] / "config.json").read_text())["modalities"]
        assert sorted(modalities) == sorted(subset)
    rows = evaluate_shapley(list(runs.values()), attributes=("gender",), bootstrap=20)
    full_id = runs[("ehr", "cxr", "static")].name
    mine = rows[rows["run_id"] == full_id]
    overall = mine[mine["attribute"] == "all"].set_index("modalities")
    assert sorted(overall.index) == ["cxr", "ehr", "static"]  # three values for the fusion run
    params = json.loads(overall["scenario_params"].iloc[0])
    assert params["players"] == ["ehr", "cxr", "static"]
    assert params["subset_runs"] == {"+".join(s): runs[s].name for s in plan}
    pred = read(runs[("ehr", "cxr", "static")], "predictions_test.csv")
    scored = np.logical_and.reduce([read(p, "predictions_test.csv")["score"].notna() for p in runs.values()])
    m = (pred["present_cxr"] == 1).to_numpy() & scored
    v_all = roc_auc_score(pred["label"][m], pred["score"][m])
    assert overall["value"].sum() == pytest.approx(v_all - 0.5, abs=1e-9)  # efficiency on trained runs
    assert overall["n"].iloc[0] == m.sum() and overall["defined"].all()
    assert params["v"]["static"] == pytest.approx(
        roc_auc_score(pred["label"][m], read(runs[("static",)], "predictions_test.csv")["score"][m]), abs=1e-6)
    for group, block in mine[mine["attribute"] == "gender"].groupby("group"):
        g = m & (pred["gender"] == group).to_numpy()
        assert block["value"].sum() == pytest.approx(roc_auc_score(pred["label"][g], pred["score"][g]) - 0.5, abs=1e-9)
    # the two-player games of the smaller runs are there too, each its own game
    games = {r: sorted(b["modalities"].unique()) for r, b in rows.groupby("run_id")}
    assert games[runs[("cxr", "static")].name] == ["cxr", "static"]
    assert games[runs[("ehr", "cxr")].name] == ["cxr", "ehr"]
    table = shapley_table(rows, min_group_size=1)
    assert {"players", "φ ehr", "φ cxr", "φ static"} <= set(table.columns)
    late = table[(table["method"] == "late") & (table["attribute"] == "all")].set_index("players")
    assert list(late.index) == ["cxr+static", "ehr+cxr", "ehr+cxr+static"]  # the largest game last
    assert late.loc["ehr+cxr", "φ static"] == "–" and late.loc["cxr+static", "φ ehr"] == "–"
    assert late.loc["ehr+cxr+static", "φ static"].startswith(("+", "-"))
