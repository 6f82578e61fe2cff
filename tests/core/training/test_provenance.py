"""Result provenance: every run's config.json says what produced it; the summary flags mixed results."""

from __future__ import annotations

import json

import pandas as pd
import torch

import mmfair
from tiny_workspace import build_tiny_workspace
from mmfair.core.config import TrainConfig
from mmfair.core.evaluation.tidy import make_row, to_frame, upsert_results
from mmfair.core.protocol import PROTOCOL_VERSION
from mmfair.core.provenance import provenance_summary, read_provenance
from mmfair.core.training.runs import train_run


def test_nn_and_tree_runs_record_provenance(tmp_path):
    ws = build_tiny_workspace(tmp_path / "ws")
    (ws.data / "prep.json").write_text(json.dumps({"mimic_version": "3.1", "source": "mimic-iv-3.1",
                                                   "fingerprint": "tiny-0-120"}))  # fmt: skip
    runs = [train_run(TrainConfig(fusion=f, epochs=1, hidden_dim=8, device="cpu"), ws) for f in ("ehr", "gbm-ehr")]
    for run in runs:
        rec = read_provenance(run.run_dir)
        assert rec["mmfair_version"] == mmfair.__version__ and rec["protocol"] == PROTOCOL_VERSION
        assert rec["data_fingerprint"] == "tiny-0-120" and rec["mimic_version"] == "3.1"
        assert rec["torch"] == torch.__version__ and rec["cuda"] == torch.version.cuda
        assert rec["device"] == "cpu" and rec["device_name"]
        assert "git_commit" in rec and "created_utc" in rec
    assert read_provenance(runs[1].run_dir)["library"].startswith("lightgbm ")
    summary = provenance_summary(ws)
    assert not summary.mixed
    assert int(summary.table.loc[summary.table["what"] == "runs/", "runs"].sum()) == 2


def test_summary_flags_results_mixed_across_versions_and_protocols(tmp_path):
    ws = build_tiny_workspace(tmp_path / "ws")
    rows = [make_row(run_id="a", method="ehr", task="mortality", metric="auroc", value=0.7),
            make_row(run_id="b", method="late", task="mortality", metric="auroc", value=0.8, mmfair_version="0.0.9",
                     protocol=1)]  # fmt: skip
    upsert_results(ws.metrics_csv, to_frame(rows))
    summary = provenance_summary(ws)
    assert summary.mixed
    assert any("mmfair_version" in w and "0.0.9" in w for w in summary.warnings)
    assert any(f"protocol values 1, {PROTOCOL_VERSION}" in w for w in summary.warnings)
    table = summary.table.set_index("mmfair_version")
    assert table.loc["0.0.9", "rows"] == 1 and table.loc["0.0.9", "what"] == "results/metrics.csv"
    assert isinstance(summary.table, pd.DataFrame)
