"""A missingness scenario added by a plugin alone (no mmfair file touched) runs through `mmfair eval-missing`.

The scenario registry is the only place that knows the mechanisms: the config's option checks, the modality
and the robustness summaries all ask it, so registering a :class:`mmfair.plugins.Scenario` subclass is enough.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mmfair.cli.app import app
from mmfair.core.config import TrainConfig
from mmfair.core.evaluation.tidy import read_results
from mmfair.plugins import SCENARIOS, Removal, Scenario, ScenarioPoint

NAME = "test_even_stays"


class EvenStays(Scenario):
    """Removes the CXR from every stay with an even ``stay_id`` (one point beside the clean one)."""

    name = NAME

    def points(self, config):
        return [ScenarioPoint({"requested_rate": 0.0}, 0.0, 1, True), ScenarioPoint({"even_stays": True}, "even", 1)]

    def apply(self, point, ctx, seed):
        keep = np.ones(ctx.present.size, dtype=bool)
        if point.params.get("even_stays"):
            keep = ctx.pred["stay_id"].to_numpy() % 2 == 1
        return Removal(keep, ctx.present.copy(), {"plugin": "even"})


@pytest.fixture
def plugin(monkeypatch):
    SCENARIOS.names()  # the built-ins first, so the copy below holds them
    monkeypatch.setattr(SCENARIOS, "_entries", dict(SCENARIOS._entries))  # unregistered again after the test
    SCENARIOS.register(NAME, summary="test only: the CXR removed from even stay ids")(EvenStays())


@pytest.fixture
def trained(tmp_path):
    from tiny_workspace import build_tiny_workspace

    from mmfair.core.training import train_run

    ws = build_tiny_workspace(tmp_path / "ws")
    run = train_run(TrainConfig(fusion="late", epochs=2, patience=2, hidden_dim=8, batch_size=64, device="cpu"), ws)
    return ws, run.run_dir


def test_a_plugin_scenario_runs_through_eval_missing(plugin, trained):
    ws, run_dir = trained
    args = ["--workspace", str(ws.root), "eval-missing", "--mechanism", NAME, "--bootstrap", "0", "--device", "cpu"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = read_results(ws.missing_csv)
    mine = rows[(rows.scenario == NAME) & (rows.metric == "auroc") & (rows.label == "all") & (rows.attribute == "all")]
    assert len(mine) == 2  # the clean point and the plugin's point
    # expected from the saved predictions: the stays with a CXR are evaluated; the even ones lose it
    pred = pd.read_csv(run_dir / "predictions_test.csv")
    with_cxr = pred[pred.present_cxr == 1]
    even = int((with_cxr.stay_id % 2 == 0).sum())
    assert 0 < even < len(with_cxr)
    removal = mine[mine.scenario_params.map(lambda p: json.loads(p).get("even_stays") is True)].iloc[0]
    params = json.loads(removal.scenario_params)
    assert params["plugin"] == "even" and params["modality"] == "cxr" and params["removed"] == even
    assert removal.missing_rate == pytest.approx(even / len(with_cxr))
    assert removal.n == len(with_cxr) and removal.evaluated_on == "with_cxr"
    clean = mine[mine.index != removal.name].iloc[0]
    assert clean.missing_rate == 0 and json.loads(clean.scenario_params)["removed"] == 0
    # the registry also says which options it reads: none, so --rate is refused, naming who reads it
    res = CliRunner().invoke(app, [*args, "--rate", "0.5"])
    assert res.exit_code == 2 and "--rate belongs to the mcar" in res.output and f"not {NAME}" in res.output
