"""Fairness tables: new columns, operating points kept apart, and the small-cell rule for intersections."""

from __future__ import annotations

import numpy as np
import pytest

from mmfair.core.evaluation.tidy import make_row, to_frame
from mmfair.core.reporting import build_tables
from mmfair.core.reporting.fairness import complementary_lines

RUN = {"method": "late", "modalities": "ehr+cxr", "task": "mortality", "fold": 0, "seed": 0, "run_id": "r0"}


def _cell(attr, grp, n, n_pos, auroc=0.8, **extra):
    base = {**RUN, "attribute": attr, "group": grp, "n": n, "n_pos": n_pos, **extra}
    return [make_row(**base, metric=m, value=v) for m, v in
            (("auroc", auroc), ("tpr", 0.7), ("fpr", 0.2), ("ppv", 0.4), ("ece", 0.05), ("brier", 0.1))]  # fmt: skip


def test_line_rule_protects_margins():
    groups = ["W*F", "W*M", "B*F", "B*M", "A*F", "A*M"]
    n = [200, 180, 60, 50, 30, 25]
    flags = complementary_lines(groups, n, [False, False, False, False, True, False])
    hidden = {g for g, f in zip(groups, flags) if f}
    # row A has two hidden cells; column F too; so no line has exactly one
    assert "A*F" in hidden and "A*M" in hidden
    for axis in (0, 1):
        for v in {g.split("*")[axis] for g in groups}:
            line = [g for g in groups if g.split("*")[axis] == v]
            assert sum(g in hidden for g in line) != 1, (axis, v, hidden)


def test_line_rule_nothing_small_nothing_hidden():
    assert not complementary_lines(["a*x", "a*y", "b*x", "b*y"], [50, 50, 50, 50], [False] * 4).any()


def test_intersection_table_suppresses_lines_and_notes_it():
    rows = []
    for grp, n, n_pos in (("W*F", 200, 40), ("W*M", 180, 35), ("B*F", 60, 15), ("B*M", 8, 3), ("A*F", 40, 12),
                          ("A*M", 45, 11)):  # fmt: skip
        rows += _cell("race_group*gender", grp, n, n_pos)
    table = build_tables(None, None, to_frame(rows), min_group_size=10)["fairness_groups"]
    shown = table.set_index("group")
    hidden = {g for g in shown.index if shown.loc[g, "AUROC"] == "<10"}
    assert "B*M" in hidden
    for axis in (0, 1):
        for v in {g.split("*")[axis] for g in shown.index}:
            line = [g for g in shown.index if g.split("*")[axis] == v]
            assert sum(g in hidden for g in line) != 1
    assert any("Intersections" in f for f in table.attrs["footnotes"])


def test_new_group_columns_and_operating_points_not_averaged():
    rows = _cell("gender", "F", 100, 30, auroc=0.8) + _cell("gender", "M", 100, 30, auroc=0.7)
    rows += _cell("gender", "F", 100, 30, auroc=0.8, threshold_rule="val-sens-0.8")
    rows += _cell("gender", "M", 100, 30, auroc=0.7, threshold_rule="val-sens-0.8")
    table = build_tables(None, None, to_frame(rows), min_group_size=10)["fairness_groups"]
    assert {"PPV", "ECE", "Brier", "threshold_rule", "selection"} <= set(table.columns)
    assert len(table) == 4 and set(table["runs"]) == {"1"}
    assert set(table["threshold_rule"]) == {"val-youden", "val-sens-0.8"}


def test_gap_table_shows_the_split_and_es_auc():
    base = {**RUN, "attribute": "race_group", "group": "all", "n": 300, "n_pos": 60}
    rows = [make_row(**base, metric="equalized_odds_difference", value=0.2, ci_low=0.1, ci_high=0.3),
            make_row(**base, metric="es_auc", value=0.7, ci_low=0.65, ci_high=0.75),
            make_row(**base, metric="demographic_parity_ratio", value=0.8),
            make_row(**base, metric="ece_gap", value=float("nan"), defined=False)]  # fmt: skip
    table = build_tables(None, None, to_frame(rows))["fairness_gaps"]
    r = table.iloc[0]
    assert r["ES-AUC"] == "0.700 [0.650, 0.750]" and r["DP ratio"] == "0.800" and r["ECE gap"] == "n/a"
    assert any("ES-AUC" in f for f in table.attrs["footnotes"])


@pytest.mark.parametrize("seed", range(5))
def test_line_rule_random_blocks_leave_no_lonely_cell(seed):
    rng = np.random.default_rng(seed)
    groups = [f"{a}*{b}" for a in "ABCD" for b in "xyz"]
    n = rng.integers(1, 60, len(groups))
    flags = complementary_lines(groups, n, n < 10)
    assert flags[n < 10].all()
    for axis in (0, 1):
        for v in {g.split("*")[axis] for g in groups}:
            idx = [i for i, g in enumerate(groups) if g.split("*")[axis] == v]
            assert flags[idx].sum() != 1


def test_split_columns_and_footnote_once_the_names_are_in_the_schema(monkeypatch):
    from mmfair.core.evaluation import tidy

    for name in ("tpr_gap", "fpr_gap", "equalized_odds_mean"):
        monkeypatch.setitem(tidy.HIGHER_IS_BETTER, name, False)
    base = {**RUN, "attribute": "race_group", "group": "all", "n": 300, "n_pos": 60}
    rows = [make_row(**base, metric=m, value=v) for m, v in
            (("tpr_gap", 0.25), ("fpr_gap", 0.05), ("equalized_odds_difference", 0.25), ("equalized_odds_mean", 0.15))]
    table = build_tables(None, None, to_frame(rows))["fairness_gaps"]
    r = table.iloc[0]
    assert (r["TPR gap"], r["FPR gap"], r["EO mean"]) == ("0.250", "0.050", "0.150")
    assert any("unequal sensitivity" in f for f in table.attrs["footnotes"])
