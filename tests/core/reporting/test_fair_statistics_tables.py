"""Report tables of the statistics: comparisons, the no-CXR answer, rank tests, selection rules, costs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mmfair.core.evaluation.tidy import make_row, to_frame
from mmfair.core.reporting import build_tables, render_markdown
from mmfair.core.reporting.comparisons import no_cxr_answer, statistics_tables, verdict

BASE = dict(modalities="ehr+cxr", task="mortality", fold=0, seed=0)


def _diff_rows(method: str, value: float, low: float, high: float, p: float, *, attribute="all", group="all",
               metric="auroc_difference") -> list[dict]:  # fmt: skip
    params = json.dumps({"reference": "late", "reference_run": "late-0", "adjust": "holm", "permutations": 99})
    common = dict(BASE, run_id=f"{method}-0", method=method, attribute=attribute, group=group, scenario_params=params,
                  n=100, n_pos=30)  # fmt: skip
    return [make_row(**common, metric=metric, value=value, ci_low=low, ci_high=high),
            make_row(**common, metric=f"{metric}_p", value=p),
            make_row(**common, metric=f"{metric}_p_adjusted", value=min(1.0, 2 * p))]  # fmt: skip


def test_verdicts_follow_the_interval_and_direction():
    assert verdict(0.01, 0.05) == "better than reference"
    assert verdict(-0.05, -0.01) == "worse than reference"
    assert verdict(-0.01, 0.02) == "no difference shown"
    assert verdict(-0.05, -0.01, smaller_is_better=True) == "better than reference"  # a smaller gap
    assert verdict(np.nan, np.nan) == "undefined"


def test_comparison_tables_split_overall_no_cxr_and_gaps():
    rows = (_diff_rows("early", 0.03, 0.01, 0.05, 0.004) + _diff_rows("ehr", -0.02, -0.05, 0.01, 0.2)
            + _diff_rows("early", 0.001, -0.02, 0.03, 0.9, attribute="has_cxr", group="0")
            + _diff_rows("early", -0.04, -0.07, -0.01, 0.01, attribute="gender", metric="auroc_gap_difference"))
    tables = statistics_tables(None, to_frame(rows))
    overall = tables["comparisons"]
    assert list(overall.method) == ["early", "ehr"]
    assert overall.loc[0, "difference [95% CI]"] == "+0.030 [+0.010, +0.050]"
    assert overall.loc[0, "p"] == "0.004" and overall.loc[0, "p adj."] == "0.008"
    assert list(overall.verdict) == ["better than reference", "no difference shown"]
    no_cxr = tables["comparisons_no_cxr"]
    assert list(no_cxr.method) == ["early"] and no_cxr.loc[0, "verdict"] == "no difference shown"
    assert no_cxr.attrs["footnotes"][0].startswith("No method beats late on stays without a CXR")
    gaps = tables["gap_comparisons"]
    assert gaps.loc[0, "attribute"] == "gender" and gaps.loc[0, "verdict"] == "better than reference"


def test_no_cxr_answer_says_so_when_a_method_wins():
    table = pd.DataFrame({"method": ["a", "b", "c"], "reference": "late",
                          "verdict": ["better than reference", "worse than reference", "no difference shown"]})
    text = no_cxr_answer(table)
    assert text.startswith("On stays without a CXR, a beats late")
    assert "1 show a higher AUROC" in text and "1 a lower one" in text and "1 no difference" in text


def _metric_rows(values: dict[str, list[float]], metric="auroc", labels=("sepsis", "chf", "copd")) -> pd.DataFrame:
    rows = []
    for method, vals in values.items():
        for label, v in zip(labels, vals):
            rows.append(make_row(**dict(BASE, task="phenotype"), run_id=f"{method}-0", method=method, label=label,
                                 metric=metric, value=v, ci_low=v - 0.01, ci_high=v + 0.01))  # fmt: skip
        rows.append(make_row(**dict(BASE, task="phenotype"), run_id=f"{method}-0", method=method, label="all",
                             metric=metric, value=float(np.mean(vals))))  # fmt: skip
    return to_frame(rows)


def test_rank_table_needs_three_methods_and_two_blocks():
    two = statistics_tables(_metric_rows({"late": [0.7, 0.8, 0.75], "ehr": [0.6, 0.7, 0.7]}), None)["ranks_auroc"]
    assert len(two) == 0 and "2 methods, 3 blocks" in two.attrs["footnotes"][0]
    assert "Rank tests need at least 3 methods" in render_markdown({"ranks_auroc": two})


def test_rank_table_means_ranks_and_tests_against_the_reference():
    metrics = _metric_rows({"late": [0.70, 0.80, 0.75], "ehr": [0.60, 0.70, 0.65], "early": [0.72, 0.82, 0.78]})
    table = statistics_tables(metrics, None, reference="late")["ranks_auroc"]
    assert list(table.method) == ["early", "late", "ehr"]  # macro 'all' rows are not a block of their own
    assert list(table["mean rank"]) == ["1.00", "2.00", "3.00"]
    assert table.set_index("method").loc["late", "median difference vs reference"] == "(reference)"
    assert table.set_index("method").loc["ehr", "median difference vs reference"] == "-0.100"
    assert "over 3 complete blocks" in table.attrs["footnotes"][0]


def _rule_rows(run_id: str, rule: str, epoch: int, gap: tuple[float, float, float], auroc: float):
    common = dict(BASE, run_id=run_id, method="late", selection=rule)
    fair = [make_row(**common, metric="selected_epoch", value=epoch),
            make_row(**common, attribute="race_group", metric="auroc_gap", value=gap[0], ci_low=gap[1], ci_high=gap[2])]
    clean = [make_row(**common, metric="auroc", value=auroc, ci_low=auroc - 0.02, ci_high=auroc + 0.02)]
    return fair, clean


def test_selection_rule_table_flags_disagreement():
    fair, clean = [], []
    for rule, epoch, gap, auroc in (("overall", 7, (0.20, 0.15, 0.25), 0.80), ("worst_group", 3, (0.05, 0.01, 0.09), 0.77),
                                    ("pareto", 7, (0.19, 0.14, 0.24), 0.80)):  # fmt: skip
        f, c = _rule_rows("late-0", rule, epoch, gap, auroc)
        fair += f
        clean += c
    f, c = _rule_rows("late-1", "overall", 5, (0.1, 0.05, 0.15), 0.8)  # one rule only: not shown
    table = statistics_tables(to_frame(clean + c), to_frame(fair + f))["selection_rules"]
    assert list(table.selection) == ["overall", "pareto", "worst_group"]
    assert list(table.epoch) == ["7", "7", "3"]
    assert table.loc[0, "AUROC"] == "0.800 [0.780, 0.820]"
    assert table.loc[2, "AUROC gap"] == "0.050 [0.010, 0.090]"
    assert set(table["rules disagree"]) == {"epoch, gap, gap Δ=0.150"}


def test_selection_rules_that_agree_are_not_flagged_as_different_fairness():
    fair, clean = [], []
    for rule in ("overall", "dto"):
        f, c = _rule_rows("late-0", rule, 4, (0.10, 0.05, 0.15), 0.8)
        fair += f
        clean += c
    table = statistics_tables(to_frame(clean), to_frame(fair))["selection_rules"]
    assert set(table["rules disagree"]) == {"gap Δ=0.000"}


def test_cost_table_shows_inference_speed():
    rows = [make_row(**BASE, run_id="late-0", method="late", metric=m, value=v)
            for m, v in (("n_params", 12345), ("train_seconds", 6.0), ("peak_memory_mb", 180.0),
                         ("infer_stays_per_s", 2500.0))]  # fmt: skip
    costs = build_tables(to_frame(rows), None, None)["costs"]
    assert costs.loc[0, "Inference stays/s"] == "2,500" and costs.loc[0, "Parameters"] == "12,345"


def test_rank_tests_run_per_condition_never_pooling_cohorts_or_stays():
    # issue 11: the same methods scored on all stays and on the stays with a CXR, and on a matched test cohort,
    # are three conditions with three rank tests — not one pooled test over runs of different populations
    full = _metric_rows({"late": [0.70, 0.80, 0.75], "ehr": [0.60, 0.70, 0.65], "early": [0.72, 0.82, 0.78]})
    cxr = full.assign(evaluated_on="with_cxr", value=full["value"].where(full["method"] != "ehr", 0.99))
    matched = full.assign(test_cohort="matched", value=full["value"].where(full["method"] != "late", 0.50))
    table = statistics_tables(pd.concat([full, cxr, matched], ignore_index=True), None, reference="late")["ranks_auroc"]
    by = {key: part.set_index("method")["mean rank"] for key, part in table.groupby(["test_cohort", "evaluated_on"])}
    assert set(by) == {("full", "all"), ("full", "with_cxr"), ("matched", "all")}
    assert by[("full", "all")]["ehr"] == "3.00" and by[("full", "with_cxr")]["ehr"] == "1.00"
    assert by[("matched", "all")]["late"] == "3.00"
    notes = table.attrs["footnotes"]
    assert len([n for n in notes if "Friedman" in n]) == 3 and any("25 labels" in n for n in notes)
