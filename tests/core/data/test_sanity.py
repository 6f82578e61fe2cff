"""The real-data sanity card: hand-set cohort rates against the published ranges, warnings only far outside."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from mmfair.core.data.sanity import PHENOTYPE_BANDS, card_warnings, sanity_card, status, warn_outliers
from mmfair.core.workspace import Workspace


def test_status_by_hand():
    assert status(0.13, 0.117, 0.15) == "within"
    assert status(0.20, 0.117, 0.15) == "outside"  # above the range, below 2 × 0.15
    assert status(0.31, 0.117, 0.15) == "far outside"
    assert status(0.05, 0.117, 0.15) == "far outside"  # below 0.117 / 2
    assert status(float("nan"), 0.1, 0.2) == "n/a"


def _cohort(n: int = 40_000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"mortality": (np.arange(n) < 0.13 * n).astype(int),  # 13 %: within 11.7–15 %
                          "has_cxr": (np.arange(n) < 0.05 * n).astype(int)})  # 5 %: far below 18 % / 2
    for slug, (low, high) in PHENOTYPE_BANDS.items():
        frame[f"pheno_{slug}"] = (rng.random(n) < (low + high) / 2).astype(int)
    frame["pheno_shock"] = (np.arange(n) < 0.5 * n).astype(int)  # 50 %: far above 2 × 10 %
    return frame


def test_card_values_and_warnings():
    card = sanity_card(_cohort()).set_index("quantity")
    assert card.loc["cohort stays", "value"] == "40,000" and card.loc["cohort stays", "status"] == "within"
    assert card.loc["in-hospital mortality", ["value", "status"]].tolist() == ["13.0%", "within"]
    assert card.loc["stays with a paired CXR", ["value", "status"]].tolist() == ["5.0%", "far outside"]
    assert card.loc["phenotype shock", "status"] == "far outside"
    assert card.loc["phenotype essential_hypertension", "status"] != "far outside"
    assert all("mimic_schema.md" in s for s in card["source"])
    assert len(card) == 3 + 25
    lines = card_warnings(card.reset_index(), "mimic-iv-2.2")
    assert len(lines) == 2 and any("paired CXR" in x for x in lines) and any("shock" in x for x in lines)
    assert card_warnings(card.reset_index(), "synthetic") == []  # the generator's settings, not a mapping


def test_prep_hook_logs_far_outside_quantities(tmp_path, caplog):
    ws = Workspace.resolve(tmp_path)
    ws.data.mkdir(parents=True)
    _cohort().to_csv(ws.cohort_csv, index=False)
    (ws.data / "prep.json").write_text(json.dumps({"mimic_version": "2.2", "source": "mimic-iv-2.2"}))
    with caplog.at_level(logging.WARNING, logger="mmfair"):
        lines = warn_outliers(ws)
    assert len(lines) == 2 and "prepped MIMIC version 2.2" in caplog.text


def test_prep_cli_renders_the_card(tmp_path):
    from mmfair.cli._sanity import sanity_table

    ws = Workspace.resolve(tmp_path)
    ws.data.mkdir(parents=True)
    _cohort(1000).to_csv(ws.cohort_csv, index=False)
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(sanity_table(ws))
    out = console.export_text()
    assert "sanity card" in out and "far outside" in out and "phenotype shock" in out
