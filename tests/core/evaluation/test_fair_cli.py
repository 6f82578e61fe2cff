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
