"""`mmfair eval-fair` end to end on fake run folders: the new options reach the core and the tidy table."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from mmfair.cli.app import app


def test_eval_fair_cli_options(tmp_path, make_run):
    ws = tmp_path  # make_run writes <tmp_path>/runs/<name>
    make_run("r1")
    args = ["--workspace", str(ws), "eval-fair", "--attr", "gender", "--attr", "race_group*gender",
            "--attr", "has_cxr", "--threshold", "val-sens-0.8", "--recalibrate", "platt", "--bootstrap", "20",
            "--seed", "3"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(ws / "results" / "fairness.csv", keep_default_na=False)
    assert set(rows.attribute) == {"gender", "race_group*gender", "has_cxr"}
    assert set(rows.threshold_rule) == {"val-sens-0.8+platt"}
    assert "es_auc" in set(rows.metric)


def test_eval_fair_cli_refuses_bad_rule_and_attribute(tmp_path, make_run):
    ws = tmp_path
    make_run("r1")
    for extra in (["--threshold", "youden"], ["--attr", "a*b*c"], ["--recalibrate", "beta"]):
        result = CliRunner().invoke(app, ["--workspace", str(ws), "eval-fair", *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert "Traceback" not in result.output


def test_one_run_that_cannot_be_evaluated_does_not_abort_the_others(tmp_path, make_run):
    # issue 16 item 6: a run whose validation fold has one class is listed with its reason; the rest are scored
    ws = tmp_path
    make_run("good", method="late")
    bad = make_run("bad", method="early")
    (bad / "threshold.json").write_text("{}")  # the threshold must then be chosen on validation ...
    val = pd.read_csv(bad / "predictions_val.csv")
    val.assign(label=0).to_csv(bad / "predictions_val.csv", index=False)  # ... which has one class
    args = ["--workspace", str(ws), "eval-fair", "--attr", "gender", "--bootstrap", "10", "--permutations", "0",
            "--no-time-inference"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bad:" in result.stderr and "one class" in result.stderr and "not evaluated" in result.stderr
    rows = pd.read_csv(ws / "results" / "fairness.csv", keep_default_na=False)
    assert set(rows.run_id) == {"good"}
    # nothing could be scored: one line, exit 2
    (ws / "runs" / "good" / "threshold.json").write_text("{}")
    val.assign(label=0).to_csv(ws / "runs" / "good" / "predictions_val.csv", index=False)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "no run could be evaluated" in result.stderr and "Traceback" not in result.stderr
