"""`mmfair eval-missing` end to end on fake run folders (the model-loading predict_fn replaced by a fake)."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from mmfair.cli.app import app
from mmfair.core import pipeline
from mmfair.core.evaluation.tidy import read_results

runner = CliRunner()


@pytest.fixture
def workspace(tmp_path, make_run, fake_predict, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cohort.csv").write_text("")
    (tmp_path / "data" / "features.h5").write_text("")
    make_run("late-f0", method="late", data_seed=0)
    make_run("early-f0", method="early", data_seed=0)
    for name in ("ehr", "cxr"):  # single-modality runs of the same fold and seed
        run = make_run(f"{name}-f0", method=name, data_seed=0)
        cfg = json.loads((run / "config.json").read_text())
        cfg["modalities"] = [name]
        (run / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(pipeline, "make_predict_fn", lambda device="auto": fake_predict())
    return tmp_path


def _invoke(ws, *args):
    return runner.invoke(app, ["--workspace", str(ws), "eval-missing", *args])


def test_group_then_mcar_with_summaries(workspace):
    res = _invoke(workspace, "--mechanism", "group", "--by", "race_group", "--rates", "WHITE=0.2,BLACK=0.6",
                  "--rates", "WHITE=0.4,BLACK=1", "--bootstrap", "20")  # fmt: skip
    assert res.exit_code == 0, res.output
    res = _invoke(workspace, "--rate", "0.5", "--rate", "1", "--bootstrap", "20")
    assert res.exit_code == 0, res.output
    assert "Robustness summaries" in res.output
    rows = read_results(workspace / "results" / "missing.csv")
    assert {"group", "mcar"} <= set(rows.scenario)
    summ = rows[rows.metric == "relative_robustness"]
    assert set(summ.scenario) == {"group", "mcar"}
    assert set(summ.run_id) == {"late-f0", "early-f0", "ehr-f0", "cxr-f0"}
    rstar = rows[rows.metric == "r_star"]
    assert set(rstar.run_id) == {"late-f0", "early-f0"}  # every fusion method, and only those
    for p in rstar.scenario_params:  # defined, or stated as never crossing
        assert "crossed" in json.loads(p)
    shap = rows[rows.metric == "shapley"]
    assert set(shap.run_id) == {"late-f0", "early-f0"} and set(shap.modalities) == {"ehr", "cxr"}
    assert "Modality contributions" in res.output
    gaps = {"auroc_gap", "equalized_odds_difference", "demographic_parity_difference"}
    assert {json.loads(p)["of"] for p in summ.scenario_params} == {"auroc", "auprc"} | gaps
    gap = summ[summ.attribute == "race_group"]  # --by race_group: the gap's curve is summarised too
    assert set(gap.scenario) == {"group"} and not gap.higher_is_better.any()
    er = rows[(rows.metric == "effective_robustness") & (rows.run_id == "late-f0")]
    assert er.defined.all() and (er.value.abs() < 1e-12).all()  # the reference against itself
    # a rerun replaces, never duplicates
    n = len(rows)
    assert _invoke(workspace, "--rate", "0.5", "--rate", "1", "--bootstrap", "20").exit_code == 0
    assert len(read_results(workspace / "results" / "missing.csv")) == n
    # ... also rows an older version keyed differently (a per-group row with the overall missing rate)
    path = workspace / "results" / "missing.csv"
    group_rows = rows[(rows.scenario == "group") & (rows.group != "all")]
    stale = group_rows.iloc[[0]].assign(missing_rate=group_rows.missing_rate.iloc[0] + 0.123)
    stale.to_csv(path, mode="a", header=False, index=False)
    assert len(read_results(path)) == n + 1
    assert _invoke(workspace, "--mechanism", "group", "--by", "race_group", "--rates", "WHITE=0.2,BLACK=0.6",
                   "--rates", "WHITE=0.4,BLACK=1", "--bootstrap", "20").exit_code == 0  # fmt: skip
    assert len(read_results(path)) == n


@pytest.mark.parametrize("args, message", [
    (["--mechanism", "group", "--rates", "WHITE=0.1"], "--by"),
    (["--mechanism", "label"], "--rates"),
    (["--mechanism", "natural", "--rate", "0.2"], "--rate"),
    (["--mechanism", "nope"], "Available"),
    (["--mechanism", "group", "--by", "race_group", "--rates", "BLAK=0.3"], "BLAK"),
])  # fmt: skip
def test_bad_options_exit_2(workspace, args, message):
    res = _invoke(workspace, *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_ehr_perturbations_from_the_cli(workspace):
    for args in (["--mechanism", "ehr_group", "--groups", "vitals,labs"],
                 ["--mechanism", "ehr_last_hours", "--hours", "12"],
                 ["--mechanism", "ehr_noise", "--noise-sd", "0.5"]):  # fmt: skip
        res = _invoke(workspace, *args, "--rate", "0.5", "--rate", "1", "--bootstrap", "0")
        assert res.exit_code == 0, res.output
    table = read_results(workspace / "results" / "missing.csv")
    for scenario, expected in (("ehr_group", {"groups": ["labs", "vitals"]}), ("ehr_last_hours", {"hours": 12}),
                               ("ehr_noise", {"perturbation": "noise", "sd": 0.5})):  # fmt: skip
        rows = table[(table["scenario"] == scenario) & (table["metric"] == "auroc")]
        assert sorted(set(rows["missing_rate"].round(2))) == [0.0, 0.5, 1.0]
        assert all(expected.items() <= json.loads(p).items() for p in rows["scenario_params"])
        rr = table[(table["scenario"] == scenario) & (table["metric"] == "relative_robustness")]
        assert len(rr) > 0
    res = _invoke(workspace, "--mechanism", "ehr_group")
    assert res.exit_code != 0 and "--groups" in res.output


def test_a_run_that_cannot_be_evaluated_is_listed_and_the_others_scored(workspace, make_run):
    # issue 16 item 6: one broken run (its predictions lack present_cxr) does not abort eval-missing
    broken = make_run("broken-f0", method="late", data_seed=0)
    path = broken / "predictions_test.csv"
    pd.read_csv(path).drop(columns="present_cxr").to_csv(path, index=False)
    res = _invoke(workspace, "--rate", "0.5", "--bootstrap", "10", "--draws", "1")
    assert res.exit_code == 0, res.output
    assert "broken-f0:" in res.stderr and "present_cxr" in res.stderr
    rows = read_results(workspace / "results" / "missing.csv")
    assert "broken-f0" not in set(rows.run_id) and {"late-f0", "ehr-f0"} <= set(rows.run_id)
