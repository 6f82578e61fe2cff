"""The robustness-summary table in `mmfair report` (markdown and terminal)."""

import json

import pytest

import pandas as pd

from mmfair.core.evaluation import robustness_summary as robustness
from mmfair.core.evaluation.tidy import make_row, to_frame
from mmfair.core.reporting import build_tables, render_markdown, render_rich
from mmfair.core.reporting.robustness import robustness_table

RATES = (0.0, 0.5, 1.0)
#: Validation AUROC of the single-modality run, what r*'s comparator is chosen on.
VAL = pd.DataFrame({"run_id": ["ehr-0"], "label": ["all"], "value": [0.70]})


def summarise(curves):
    return robustness.summarise(curves, validation=VAL)


def _curve(run_id, method, modalities, values, lows, seed=0, metric="auroc", attribute="all", train_missing=None,
           highs=None):  # fmt: skip
    rows = []
    highs = highs or [v + 0.02 for v in values]
    for rate, v, lo, hi in zip(RATES, values, lows, highs):
        params = {"modality": "cxr", "stratified_on": "label", "requested_rate": rate}
        extra = {} if train_missing is None else {"train_missing": train_missing}
        rows.append(make_row(
            run_id=run_id, method=method, modalities=modalities, task="mortality", fold=0, seed=seed,
            test_cohort="full", scenario="mcar", scenario_params=json.dumps(params, sort_keys=True),
            missing_rate=rate, draw=0, draw_seed=1, metric=metric, value=v, n=100, n_pos=30,
            ci_low=lo, ci_high=hi, attribute=attribute, **extra,
        ))  # fmt: skip
    return rows


@pytest.fixture
def missing():
    rows = []
    rows += _curve("late-0", "late", "ehr+cxr", [0.80, 0.76, 0.70], [0.78, 0.73, 0.66])
    rows += _curve("late-1", "late", "ehr+cxr", [0.82, 0.76, 0.72], [0.80, 0.74, 0.69], seed=1)
    rows += _curve("robust-0", "robust", "ehr+cxr", [0.85, 0.85, 0.85], [0.83, 0.83, 0.83])
    rows += _curve("ehr-0", "ehr", "ehr", [0.72] * 3, [0.70] * 3)
    rows += _curve("late-0", "late", "ehr+cxr", [0.40, 0.35, 0.30], [0.38, 0.33, 0.28], metric="auprc")
    curves = to_frame(rows)
    return to_frame(list(curves.to_dict("records")) + list(summarise(curves).to_dict("records")))


def test_table_values(missing):
    t = robustness_table(missing).set_index("method")
    assert list(t.columns[:5]) == ["modalities", "task", "train missing", "scenario", "modality"]
    assert set(t["train missing"]) == {"none"}  # tables from before the column existed read as none
    # robust: flat 0.85 -> RR 0.850, ER vs late (mean curve 0.81, 0.76, 0.71; shift +0.04): (0+0.05+0.10)/3
    assert t.loc["robust", "AUROC RR"] == "0.850"
    assert t.loc["robust", "AUROC ER"] == f"{0.05:.3f}"
    assert t.loc["robust", "AUROC r*"] == "never (≤ 1)"
    # late: two seeds -> mean ± sd; r*: 0.66 < 0.72 at 1.0 (seed 0) and 0.69 < 0.72 at 1.0 (seed 1)
    rr0 = 0.5 * (0.80 + 0.76) / 2 + 0.5 * (0.76 + 0.70) / 2
    rr1 = 0.5 * (0.82 + 0.76) / 2 + 0.5 * (0.76 + 0.72) / 2
    assert t.loc["late", "AUROC RR"].startswith(f"{(rr0 + rr1) / 2:.3f} ± ") and "(k=2)" in t.loc["late", "AUROC RR"]
    assert t.loc["late", "AUROC r*"].startswith("1.000 ± 0.000 (k=2)")
    assert t.loc["ehr", "AUROC r*"] == "–"  # not a fusion method
    assert t.loc["late", "AUPRC RR"] != "–" and t.loc["robust", "AUPRC RR"] == "–"
    assert t.attrs["title"] == "Robustness summaries" and any("r*" in n for n in t.attrs["footnotes"])


def test_in_report_markdown_and_terminal(missing):
    tables = build_tables(None, missing, None)
    assert "robustness" in tables and len(tables["robustness"]) == 3
    md = render_markdown(tables)
    assert "## Robustness summaries" in md and "never (≤ 1)" in md and "RR (relative robustness)" in md
    titles = [t.title for t in render_rich(tables)]
    assert any(t.startswith("Robustness summaries") for t in titles)


def test_empty_missing_table():
    tables = build_tables(None, None, None)
    assert len(tables["robustness"]) == 0
    assert "_No results yet._" in render_markdown(tables)


def _shapley(run_id, attribute, group, phis, n, n_pos, seed=0):
    return [make_row(run_id=run_id, method="late", modalities=m, task="mortality", fold=0, seed=seed,
                     scenario="none", scenario_params="{}", missing_rate=0.0, attribute=attribute, group=group,
                     metric="shapley", value=v, n=n, n_pos=n_pos, ci_low=v - 0.01, ci_high=v + 0.01)
            for m, v in phis.items()]  # fmt: skip


def test_shapley_table_with_small_cells():
    rows = []
    rows += _shapley("late-0", "all", "all", {"ehr": 0.25, "cxr": 0.05}, 400, 120)
    rows += _shapley("late-0", "race_group", "WHITE", {"ehr": 0.24, "cxr": 0.04}, 250, 70)
    rows += _shapley("late-0", "race_group", "BLACK", {"ehr": 0.20, "cxr": 0.10}, 120, 40)
    rows += _shapley("late-0", "race_group", "ASIAN", {"ehr": 0.30, "cxr": 0.00}, 30, 5)  # 5 positives: small
    tables = build_tables(None, to_frame(rows), None, min_group_size=10)
    t = tables["shapley"]
    assert list(t.columns) == ["method", "task", "train missing", "attribute", "group", "runs", "n", "φ ehr", "φ cxr"]
    assert t.iloc[0]["attribute"] == "all" and t.iloc[0]["φ ehr"] == "+0.250 [+0.240, +0.260]"
    by = t.set_index("group")
    assert by.loc["ASIAN", "φ cxr"] == "<10" and by.loc["ASIAN", "n"] == "<10"
    assert by.loc["BLACK", "φ ehr"] == "<10"  # complementary: the next-smallest group is hidden too
    assert by.loc["WHITE", "φ cxr"] == "+0.040 [+0.030, +0.050]"
    md = render_markdown(tables)
    assert "## Modality contributions (Shapley)" in md and "0.300" not in md and "0.100" not in md


def test_gap_summaries_table_labels_direction_and_values(missing):
    rows = list(missing[~missing.metric.isin(["relative_robustness", "effective_robustness", "r_star"])]
                .to_dict("records"))  # fmt: skip
    # late's AUROC gap grows 0.04 -> 0.10 -> 0.16 (upper bounds +0.02); ehr's stays at 0.05
    rows += _curve("late-0", "late", "ehr+cxr", [0.04, 0.10, 0.16], [0.02, 0.08, 0.14], metric="auroc_gap",
                   attribute="race_group")  # fmt: skip
    rows += _curve("ehr-0", "ehr", "ehr", [0.05] * 3, [0.03] * 3, metric="auroc_gap", attribute="race_group")
    rows += _curve("late-0", "late", "ehr+cxr", [0.10, 0.12, 0.14], [0.05, 0.07, 0.09],
                   metric="equalized_odds_difference", attribute="race_group")  # fmt: skip
    curves = to_frame(rows)
    table = to_frame(list(curves.to_dict("records")) + list(summarise(curves).to_dict("records")))
    tables = build_tables(None, table, None)
    gaps = tables["robustness_gaps"]
    assert list(gaps.columns) == ["method", "modalities", "task", "train missing", "scenario", "modality",
                                  "test_cohort", "evaluated_on", "label", "attribute", "gap", "runs", "RR", "ER",
                                  "r*"]  # fmt: skip
    late = gaps[gaps.method == "late"].set_index("gap")
    assert list(late.index) == ["AUROC gap (lower is better)", "EO diff (lower is better)"]
    assert late.loc["AUROC gap (lower is better)", "RR"] == f"{0.5 * 0.07 + 0.5 * 0.13:.3f}"
    # r*: upper bound 0.06 > ehr's 0.05 already at rate 0
    assert late.loc["AUROC gap (lower is better)", "r*"] == "0.000"
    assert late.loc["EO diff (lower is better)", "r*"] == "n/a"  # no single-modality EO curve
    assert gaps.attrs["title"] == "Robustness summaries of the fairness gaps"
    assert any("Lower is better for every gap" in n for n in gaps.attrs["footnotes"])
    assert "## Robustness summaries of the fairness gaps" in render_markdown(tables)
    # the overall table is unchanged by the gap rows
    assert len(tables["robustness"]) == 3


def test_train_missing_runs_are_separate_rows_and_never_pooled(missing):
    curves = missing[~missing.metric.isin(["relative_robustness", "effective_robustness", "r_star"])]
    rows = list(curves.to_dict("records"))
    rows += _curve("late-d3", "late", "ehr+cxr", [0.79, 0.78, 0.77], [0.77, 0.76, 0.75], train_missing="dropout=0.3")
    curves = to_frame(rows)
    table = to_frame(list(curves.to_dict("records")) + list(summarise(curves).to_dict("records")))
    tables = build_tables(None, table, None)
    t = tables["robustness"].set_index(["method", "train missing"])
    assert t.loc[("late", "dropout=0.3"), "runs"] == "1" and t.loc[("late", "none"), "runs"] == "2"
    assert t.loc[("late", "dropout=0.3"), "AUROC RR"] == f"{0.5 * 0.785 + 0.5 * 0.775:.3f}"
    assert t.loc[("late", "dropout=0.3"), "AUROC ER"] == "0.000"  # its own reference: late with dropout
    mcar = tables["missing"].set_index(["method", "train missing"])
    assert mcar.loc[("late", "dropout=0.3"), "50%"] == "0.780 [0.760, 0.800]"
    assert "±" in mcar.loc[("late", "none"), "50%"]  # the two plain seeds, without the dropout run
