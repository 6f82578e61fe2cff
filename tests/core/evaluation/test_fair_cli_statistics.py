"""`eval-fair --test-cohort/--reference`, `eval-missing --test-cohort` and `report --reference` on fake runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from mmfair.cli.app import app


def _invoke(ws: Path, *args: str):
    result = CliRunner().invoke(app, ["--workspace", str(ws), *args])
    assert result.exit_code == 0, result.output
    return result


def test_eval_fair_cohort_reference_and_report(tmp_path, make_run):
    for method in ("late", "ehr", "early"):  # make_run writes <tmp_path>/runs/<name>
        make_run(f"{method}-0", method=method)
    _invoke(tmp_path, "eval-fair", "--attr", "gender", "--bootstrap", "20", "--permutations", "19",
            "--test-cohort", "matched", "--no-time-inference")  # fmt: skip
    rows = pd.read_csv(tmp_path / "results" / "fairness.csv", keep_default_na=False)
    assert set(rows.test_cohort) == {"matched"} and {"split", "train_missing"} <= set(rows.columns)
    diffs = rows[rows.metric == "auroc_difference"]
    assert set(diffs.method) == {"ehr", "early"} and set(diffs.attribute) == {"all"}  # matched: no stay lacks a CXR
    costs = pd.read_csv(tmp_path / "results" / "metrics.csv", keep_default_na=False)
    assert set(costs.metric) == {"n_params", "train_seconds", "peak_memory_mb"}
    result = _invoke(tmp_path, "report", "--format", "markdown", "--reference", "ehr")
    text = (tmp_path / "reports" / "report.md").read_text()
    for title in ("## Cost", "## Paired comparisons with the reference method", "## Ranks across methods: AUROC gap"):
        assert title in text, title
    assert "report written" in result.output


def test_eval_fair_reference_none_writes_no_comparisons(tmp_path, make_run):
    for method in ("late", "ehr"):
        make_run(f"{method}-0", method=method)
    _invoke(tmp_path, "eval-fair", "--attr", "gender", "--bootstrap", "0", "--reference", "none")
    rows = pd.read_csv(tmp_path / "results" / "fairness.csv", keep_default_na=False)
    assert not rows.metric.str.contains("difference_p").any() and "auroc_difference" not in set(rows.metric)


def test_eval_missing_test_cohort_option(tmp_path, make_run, monkeypatch):
    make_run("late-0", method="late")
    seen = {}

    def fake_eval_missing(config, workspace, run_ids=None):
        seen["cohort"] = config.test_cohort
        return pd.DataFrame()

    from mmfair.core import pipeline

    monkeypatch.setattr(pipeline, "eval_missing", fake_eval_missing)
    monkeypatch.setattr(pipeline, "report_tables", lambda config, ws: {})
    _invoke(tmp_path, "eval-missing", "--mechanism", "natural", "--test-cohort", "matched")
    assert seen["cohort"] == "matched"
    bad = CliRunner().invoke(app, ["--workspace", str(tmp_path), "eval-missing", "--test-cohort", "paired"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
