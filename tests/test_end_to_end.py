"""The demo path end to end through the CLI, on a small synthetic source (slow: run by `make test-all`)."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from mmfair.cli.app import app

pytestmark = pytest.mark.slow
runner = CliRunner()

TIDY = [
    "run_id", "method", "modalities", "task", "label", "fold", "seed", "train_cohort", "test_cohort", "split",
    "selection", "scenario", "scenario_params", "missing_rate", "train_missing_rate", "train_missing", "draw", "draw_seed",
    "threshold_rule", "attribute", "group", "metric", "value", "higher_is_better", "n", "n_pos", "defined",
    "ci_low", "ci_high",
]


def run(ws, *args):
    result = runner.invoke(app, ["--workspace", str(ws), *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("e2e") / "ws"
    run(ws, "prep", "--n-stays", "400", "--encoder-steps", "40")
    run(ws, "train", "--fusion", "ehr", "--fusion", "cxr", "--fusion", "late", "--fusion", "early",
        "--task", "mortality", "--epochs", "4", "--bootstrap", "50")
    run(ws, "eval-missing", "--rate", "0.5", "--rate", "1.0", "--bootstrap", "50")
    run(ws, "eval-fair", "--bootstrap", "50")
    run(ws, "report", "--format", "markdown")
    return ws


def test_data_contract(workspace):
    cohort = pd.read_csv(workspace / "data" / "cohort.csv")
    assert list(cohort.columns[:6]) == ["stay_id", "subject_id", "hadm_id", "intime", "outtime", "fold"]
    assert (cohort.groupby("subject_id")["fold"].nunique() == 1).all()
    assert 0.3 < cohort["has_cxr"].mean() < 0.9
    assert (workspace / "data" / "attrition.csv").exists()
    prep = json.loads((workspace / "data" / "prep.json").read_text())
    assert prep


def test_runs_are_complete(workspace):
    runs = [p for p in (workspace / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 4
    for run_dir in runs:
        for name in ("config.json", "model.pt", "history.csv", "scaling.json", "threshold.json",
                     "predictions_val.csv", "predictions_test.csv", "DONE"):
            assert (run_dir / name).exists(), (run_dir, name)


def test_results_follow_the_tidy_schema(workspace):
    for name in ("metrics.csv", "missing.csv", "fairness.csv"):
        df = pd.read_csv(workspace / "results" / name)
        assert list(df.columns) == TIDY, name
        assert len(df) > 0


def test_missing_rates_include_the_clean_reference(workspace):
    missing = pd.read_csv(workspace / "results" / "missing.csv")
    assert {0.0, 0.5, 1.0} <= set(missing["missing_rate"].round(6))
    late = missing[(missing.method == "late") & (missing.metric == "auroc") & (missing.label == "all")]
    assert late["missing_rate"].nunique() == 3


def test_rerun_reuses_and_replaces(workspace):
    before = pd.read_csv(workspace / "results" / "missing.csv")
    result = run(workspace, "train", "--fusion", "late", "--task", "mortality", "--epochs", "4", "--bootstrap", "50")
    assert "1 reused" in result.output
    run(workspace, "eval-missing", "--rate", "0.5", "--rate", "1.0", "--bootstrap", "50")
    after = pd.read_csv(workspace / "results" / "missing.csv")
    assert len(after) == len(before)


def test_report_markdown(workspace):
    text = (workspace / "reports" / "report.md").read_text()
    for method in ("ehr", "cxr", "late", "early"):
        assert method in text
    assert "race_group" in text
