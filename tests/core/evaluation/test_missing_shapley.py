"""Modality Shapley values (HAIM): the formula, efficiency, and the rows from subset runs."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mmfair.core.evaluation.shapley import V_EMPTY, evaluate_shapley, shapley_values, update_shapley
from mmfair.core.evaluation.tidy import read_results


def test_two_players_hand_computed():
    v = {frozenset({"ehr"}): 0.7, frozenset({"cxr"}): 0.6, frozenset({"ehr", "cxr"}): 0.8}
    phi = shapley_values(v, ["ehr", "cxr"])
    # φ_ehr = ½(0.7 − 0.5) + ½(0.8 − 0.6); φ_cxr = ½(0.6 − 0.5) + ½(0.8 − 0.7)
    assert phi["ehr"] == pytest.approx(0.2) and phi["cxr"] == pytest.approx(0.1)
    assert phi["ehr"] + phi["cxr"] == pytest.approx(0.8 - V_EMPTY)


def test_three_players_efficiency_and_dummy():
    rng = np.random.default_rng(0)
    players = ["ehr", "cxr", "static"]
    base = {frozenset(): 0.5}
    for s in [{"ehr"}, {"cxr"}, {"ehr", "cxr"}]:
        base[frozenset(s)] = float(rng.uniform(0.55, 0.9))
    v = {}
    for s, val in base.items():  # static is a dummy: adding it changes nothing
        if s:
            v[s] = val
        v[s | {"static"}] = val
    phi = shapley_values(v, players)
    assert sum(phi.values()) == pytest.approx(v[frozenset(players)] - 0.5)
    assert phi["static"] == pytest.approx(0.0, abs=1e-12)
    # arrays (bootstrap replicates) combine element-wise and keep efficiency per replicate
    va = {s: np.array([x, x - 0.01]) for s, x in v.items()}
    pa = shapley_values(va, players, np.array([0.5, 0.5]))
    assert np.allclose(sum(pa.values()), va[frozenset(players)] - 0.5)


def _subset_run(make_run, name, method, modalities, seed_noise, **kw):
    run = make_run(name, method=method, **kw)
    cfg = json.loads((run / "config.json").read_text())
    cfg["modalities"] = modalities
    (run / "config.json").write_text(json.dumps(cfg))
    pred = pd.read_csv(run / "predictions_test.csv")
    rng = np.random.default_rng(seed_noise)
    for col in [c for c in pred.columns if c.startswith("score")]:
        s = pred[col].to_numpy(dtype=float)
        s = np.clip(s + rng.normal(0, 0.15, s.size), 0, 1).round(3)
        if modalities == ["cxr"]:
            s = np.where(pred.present_cxr > 0, s, np.nan)  # cannot score without a CXR
        pred[col] = s
    pred.to_csv(run / "predictions_test.csv", index=False)
    return run


@pytest.fixture
def subset_runs(make_run):
    return [
        _subset_run(make_run, "late-0", "late", ["ehr", "cxr"], 1, n_subjects=300),
        _subset_run(make_run, "ehr-0", "ehr", ["ehr"], 2, n_subjects=300),
        _subset_run(make_run, "cxr-0", "cxr", ["cxr"], 3, n_subjects=300),
    ]


def test_rows_efficiency_overall_and_per_group(subset_runs):
    rows = evaluate_shapley(subset_runs, attributes=("race_group",), bootstrap=30)
    assert (rows.metric == "shapley").all() and set(rows.modalities) == {"ehr", "cxr"}
    assert (rows.run_id == "late-0").all() and (rows.method == "late").all()
    preds = {p.name: pd.read_csv(p / "predictions_test.csv") for p in subset_runs}
    late = preds["late-0"]
    pop = (late.present_cxr > 0) & preds["cxr-0"].score.notna()
    for (attribute, group), block in rows.groupby(["attribute", "group"]):
        assert len(block) == 2
        m = pop if group == "all" else pop & (late.race_group == group)
        v_all = roc_auc_score(late.label[m], late.score[m])
        assert block.value.sum() == pytest.approx(v_all - 0.5)  # efficiency: Σφ = v(all) − v(∅)
        params = json.loads(block.scenario_params.iloc[0])
        assert params["v"]["ehr"] == pytest.approx(roc_auc_score(late.label[m], preds["ehr-0"].score[m]), abs=1e-6)
        assert params["subset_runs"] == {"cxr": "cxr-0", "ehr": "ehr-0", "ehr+cxr": "late-0"}
        assert (block.n == m.sum()).all() and (block.n_pos == late.label[m].sum()).all()
        assert block.ci_low.notna().all() and (block.ci_low <= block.ci_high).all()
    assert set(rows.group) == {"all", "WHITE", "BLACK", "ASIAN"}


def test_no_rows_without_every_subset(subset_runs):
    assert len(evaluate_shapley(subset_runs[:2], attributes=())) == 0
    # another seed's subset runs do not count
    cfg = json.loads((subset_runs[2] / "config.json").read_text())
    cfg["seed"] = 7
    (subset_runs[2] / "config.json").write_text(json.dumps(cfg))
    assert len(evaluate_shapley(subset_runs, attributes=())) == 0


def test_multilabel_macro_is_mean_of_labels(make_run):
    runs = [_subset_run(make_run, "late-p", "late", ["ehr", "cxr"], 1, kind="multilabel"),
            _subset_run(make_run, "ehr-p", "ehr", ["ehr"], 2, kind="multilabel"),
            _subset_run(make_run, "cxr-p", "cxr", ["cxr"], 3, kind="multilabel")]  # fmt: skip
    rows = evaluate_shapley(runs, attributes=(), bootstrap=0)
    per = rows[rows.label != "all"].groupby("modalities").value.mean()
    macro = rows[rows.label == "all"].set_index("modalities").value
    assert macro["ehr"] == pytest.approx(per["ehr"]) and macro["cxr"] == pytest.approx(per["cxr"])


def test_update_replaces_rows(tmp_path, subset_runs):
    path = tmp_path / "missing.csv"
    first = update_shapley(path, subset_runs, attributes=("gender",), bootstrap=0)
    update_shapley(path, subset_runs, attributes=("gender",), bootstrap=0)
    assert len(read_results(path)) == len(first)
    update_shapley(path, subset_runs[:2], attributes=("gender",), bootstrap=0)
    assert len(read_results(path)) == 0


def test_subset_runs_match_train_time_missingness(make_run, subset_runs):
    def with_dropout(run, rate=0.3):
        cfg = json.loads((run / "config.json").read_text())
        cfg["modality_dropout"] = rate
        (run / "config.json").write_text(json.dumps(cfg))
        return run

    late_d = with_dropout(_subset_run(make_run, "late-d", "late", ["ehr", "cxr"], 4, n_subjects=300))
    ehr_d = with_dropout(_subset_run(make_run, "ehr--dropout", "ehr", ["ehr"], 5, n_subjects=300))
    rows = evaluate_shapley([*subset_runs, late_d, ehr_d], attributes=(), bootstrap=0)
    used = {r: json.loads(b.scenario_params.iloc[0])["subset_runs"] for r, b in rows.groupby("run_id")}
    # the dropout run takes the EHR run trained with dropout, and falls back to the plain CXR run
    assert used["late-d"] == {"cxr": "cxr-0", "ehr": "ehr--dropout", "ehr+cxr": "late-d"}
    # the plain run never takes a dropout run, although "ehr--dropout" sorts first among the EHR runs
    assert used["late-0"] == {"cxr": "cxr-0", "ehr": "ehr-0", "ehr+cxr": "late-0"}
    assert set(rows[rows.run_id == "late-d"].train_missing) == {"dropout=0.3"}


def test_small_groups_and_their_complement_are_not_written(subset_runs):
    # issue 11: per-group Shapley values obey the small-cell rule (with complementary suppression): nothing of
    # the ASIAN group (about 10 % of the stays with a CXR, few positives) is written at min_group_size 25, nor of
    # the next-smallest group, which would give it away
    rows = evaluate_shapley(subset_runs, attributes=("race_group",), bootstrap=0, min_group_size=25)
    by_group = rows[rows.attribute == "race_group"].groupby("group")
    hidden = {g for g, b in by_group if not b.defined.any()}
    assert hidden == {"ASIAN", "BLACK"}  # ASIAN below the minimum; BLACK its complement
    for _, r in rows[rows.group.isin(hidden)].iterrows():
        assert np.isnan(r.value) and all(v is None for v in json.loads(r.scenario_params)["v"].values())
    assert rows[rows.group == "WHITE"].defined.all() and (rows.evaluated_on == "with_cxr").all()
