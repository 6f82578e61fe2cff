"""build_tables and the renderers, on hand-made tidy rows."""

import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from rich.table import Table

from mmfair.core.evaluation.tidy import make_row, to_frame
from mmfair.core.reporting import build_tables, render_csv, render_markdown, render_rich
from mmfair.core.reporting.suppression import complementary, is_small, suppress_block

RUN = {"method": "late", "modalities": "ehr+cxr", "task": "mortality", "fold": 0, "seed": 0}


def _clean_rows(run_id="r0", auroc=0.81, seed=0, method="late"):
    base = {**RUN, "run_id": run_id, "seed": seed, "method": method}
    return [
        make_row(**base, metric="auroc", value=auroc, ci_low=auroc - 0.03, ci_high=auroc + 0.02, n=500, n_pos=80),
        make_row(**base, metric="auprc", value=0.42, ci_low=0.35, ci_high=0.5, n=500, n_pos=80),
        make_row(**base, metric="brier", value=0.1, n=500, n_pos=80),
        make_row(**base, metric="n_params", value=12345.0),
    ]


def _group(attr, grp, n, n_pos, auroc, tpr=0.7, fpr=0.2, run_id="r0"):
    base = {**RUN, "run_id": run_id, "attribute": attr, "group": grp, "n": n, "n_pos": n_pos}
    defined = n_pos > 0 and n_pos < n
    return [
        make_row(**base, metric="auroc", value=auroc, defined=defined),
        make_row(**base, metric="tpr", value=tpr, defined=n_pos > 0),
        make_row(**base, metric="fpr", value=fpr, defined=n_pos < n),
    ]


@pytest.fixture
def fairness():
    rows = []
    rows += _group("race_group", "WHITE", 300, 60, 0.811)
    rows += _group("race_group", "BLACK", 40, 12, 0.622, tpr=0.555)
    rows += _group("race_group", "ASIAN", 7, 2, 0.933, tpr=0.444)  # small: suppressed
    rows += _group("gender", "F", 180, 40, 0.801)
    rows += _group("gender", "M", 167, 34, 0.777)
    rows += _group("age_group", "18-39", 30, 0, float("nan"), fpr=0.123)  # one class: AUROC undefined
    rows += _group("age_group", "40-59", 317, 74, 0.79)
    base = {**RUN, "run_id": "r0", "attribute": "race_group"}
    rows.append(make_row(**base, metric="auroc_gap", value=0.189, ci_low=0.05, ci_high=0.3, n=340, n_pos=72))
    rows.append(make_row(**base, metric="equalized_odds_difference", value=0.0, defined=False))
    return to_frame(rows)


def test_primary_rule():
    small = is_small([100, 100, 100, 5, np.nan], [50, 5, 95, 2, 1], 10)
    assert small.tolist() == [False, True, True, True, True]


def test_complementary_rule():
    out = complementary(["a", "b", "c"], [100, 40, 7], [False, False, True])
    assert out.tolist() == [False, True, True]  # next-smallest joins the suppressed one
    assert complementary(["a", "b", "c"], [5, 6, 100], [True, True, False]).tolist() == [True, True, False]
    assert suppress_block(["x", "y"], [200, 9], [50, 3], 10).tolist() == [True, True]


def test_fairness_groups_suppressed_with_marker_and_footnote(fairness):
    tables = build_tables(None, None, fairness, min_group_size=10)
    groups = tables["fairness_groups"].set_index(["attribute", "group"])
    assert groups.loc[("race_group", "ASIAN"), "n"] == "<10"
    assert groups.loc[("race_group", "BLACK"), "n"] == "<10"  # complementary
    assert groups.loc[("race_group", "BLACK"), "AUROC"] == "<10"
    assert groups.loc[("race_group", "WHITE"), "n"] == "300"
    assert groups.loc[("gender", "F"), "n"] == "180"
    # age 18-39 has no positive: suppressed (n_pos < 10), and so is its complement
    assert groups.loc[("age_group", "18-39"), "n"] == "<10"
    md = render_markdown(tables)
    for leaked in ("0.622", "0.933", "0.555", "0.444", "| 7 |", "| 40 |", "0.123"):
        assert leaked not in md
    assert "small-cell rule" in md


def test_undefined_renders_na_never_zero(fairness):
    tables = build_tables(None, None, fairness, min_group_size=1)
    groups = tables["fairness_groups"].set_index(["attribute", "group"])
    # a one-class group is always a small cell (n_pos = 0 < k): hidden, not shown as a number
    assert groups.loc[("age_group", "18-39"), "AUROC"] == "<1"
    gaps = tables["fairness_gaps"].set_index("attribute")
    assert gaps.loc["race_group", "EO diff"] == "n/a"
    assert gaps.loc["race_group", "AUROC gap"] == "0.189 [0.050, 0.300]"
    md = render_markdown(tables)
    assert "n/a" in md and "never read it as 0" in md


def test_clean_table_single_and_several_runs():
    one = build_tables(to_frame(_clean_rows()), None, None)["clean"]
    assert one.loc[0, "AUROC"] == "0.810 [0.780, 0.830]"
    assert one.loc[0, "runs"] == "1"
    rows = _clean_rows("a", 0.80, seed=0) + _clean_rows("b", 0.82, seed=1) + _clean_rows("c", 0.70, method="early")
    many = build_tables(to_frame(rows), None, None)["clean"].set_index("method")
    assert many.loc["late", "AUROC"] == f"0.810 ± {np.std([0.80, 0.82], ddof=1):.3f} (k=2)"
    assert many.loc["early", "runs"] == "1"
    costs = build_tables(to_frame(rows), None, None)["costs"]
    assert "12,345" in costs["Parameters"].tolist()


def test_missing_table_by_requested_rate_averaging_draws():
    rows = []
    for rate, draws in ((0.0, [0.8]), (0.5, [0.7, 0.6])):
        for d, v in enumerate(draws):
            params = json.dumps({"modality": "cxr", "requested_rate": rate, "stratified_on": "label"})
            rows.append(make_row(**RUN, run_id="r0", scenario="mcar", scenario_params=params,
                                 missing_rate=rate + 0.004 * (rate > 0), draw=d, draw_seed=100 + d,
                                 metric="auroc", value=v, ci_low=v - 0.1, ci_high=v + 0.1, n=100, n_pos=20))
    rows.append(make_row(**{**RUN, "method": "ehr_only"}, run_id="r1", scenario="mcar", missing_rate=1.0, draw=0,
                         scenario_params=json.dumps({"requested_rate": 1.0}), metric="auroc", value=0.0,
                         defined=False, n=0, n_pos=0))
    table = build_tables(None, to_frame(rows), None)["missing"].set_index("method")
    assert list(table.columns[-3:]) == ["0%", "50%", "100%"]
    assert table.loc["late", "50%"] == "0.650 [0.550, 0.750]"
    assert table.loc["ehr_only", "100%"] == "n/a"
    assert table.loc["late", "100%"] == "–"


def test_renderers(fairness):
    tables = build_tables(to_frame(_clean_rows()), None, fairness)
    md = render_markdown(tables, title="Demo")
    assert md.startswith("# Demo")
    for heading in ("## Clean test performance", "## Robustness to a missing modality (MCAR)", "## Per-group performance",
                    "## Fairness gaps"):
        assert heading in md
    assert "| method | modalities | task | test_cohort | selection | n | runs | AUROC | AUPRC | Brier |" in md
    csv = render_csv(tables)
    back = pd.read_csv(pd.io.common.StringIO(csv))
    assert back.columns[0] == "table" and {"clean", "fairness_groups"} <= set(back["table"])
    rich_tables = render_rich(tables)
    assert rich_tables and all(isinstance(t, Table) for t in rich_tables)
    console = Console(record=True, width=200)
    for t in rich_tables:
        console.print(t)
    text = console.export_text()
    assert "<10" in text and "0.933" not in text


def test_empty_inputs():
    tables = build_tables(None, pd.DataFrame(), None)
    assert set(tables) >= {"clean", "missing", "fairness_groups", "fairness_gaps"}
    assert all(len(t) == 0 for t in tables.values())
    assert "No results yet" in render_markdown(tables)
    assert render_csv(tables) == "table\n"


def test_suppression_consistent_across_labels():
    """A group hidden for its size in one label's block is hidden, with the same complement, in all."""
    rows = []
    for label, pos in (("chf", {"A": 50, "B": 20, "C": 3, "D": 30}), ("copd", {"A": 50, "B": 20, "C": 3, "D": 5})):
        for grp, n in (("A", 200), ("B", 60), ("C", 8), ("D", 70)):
            base = {**RUN, "task": "phenotype", "run_id": "r0", "label": label, "attribute": "race_group",
                    "group": grp, "n": n, "n_pos": pos[grp]}
            rows.append(make_row(**base, metric="auroc", value=0.7))
    table = build_tables(None, None, to_frame(rows))["fairness_groups"].set_index(["label", "group"])
    # C is small (n=8) and B its complement in both labels, even though in copd D is also hidden
    for label in ("chf", "copd"):
        assert table.loc[(label, "C"), "n"] == "<10" and table.loc[(label, "B"), "n"] == "<10"
    assert table.loc[("copd", "D"), "n"] == "<10" and table.loc[("chf", "D"), "n"] == "70"


def test_missing_table_keeps_removed_modalities_and_mechanisms_apart():
    base = dict(run_id="r1", method="late", modalities="ehr+cxr", task="mortality", fold=0, seed=0, label="all", group="all", attribute="all",
                metric="auroc", defined=True, n=100, n_pos=20, ci_low=0.5, ci_high=0.9)
    rows = [
        dict(base, scenario="mcar", missing_rate=0.5, value=0.70,
             scenario_params=json.dumps({"modality": "cxr", "requested_rate": 0.5})),
        dict(base, scenario="mcar", missing_rate=0.5, value=0.60,
             scenario_params=json.dumps({"modality": "ehr", "requested_rate": 0.5})),
        dict(base, scenario="group", missing_rate=0.3, value=0.65,
             scenario_params=json.dumps({"modality": "cxr", "by": "race_group", "rates": {"BLACK": 0.5}})),
    ]
    tables = build_tables(None, to_frame(rows), None)
    mcar = tables["missing"].set_index("removed")
    assert mcar.loc["cxr", "50%"].startswith("0.700") and mcar.loc["ehr", "50%"].startswith("0.600")
    profiles = tables["missing_profiles"]
    assert len(profiles) == 1 and profiles.iloc[0]["by"] == "race_group"
    assert profiles.iloc[0]["AUROC"].startswith("0.650")


def test_terminal_tables_move_constant_key_columns_into_the_title(fairness):
    tables = build_tables(to_frame(_clean_rows()), None, fairness)
    rendered = {t.title.split(" (")[0]: t for t in render_rich(tables)}
    groups = rendered["Per-group performance"]
    headers = [c.header for c in groups.columns]
    assert "selection" not in headers and "selection: overall" in groups.title
    assert "AUROC" in headers and "group" in headers


def test_runs_trained_under_other_conditions_are_labelled_not_pooled():
    from mmfair.core.reporting.tables import label_conditions

    rows = pd.DataFrame({"method": ["late", "late", "late", "early"], "train_cohort": ["full", "matched", "full", "full"],
                         "split": ["random", "random", "temporal", ""], "train_missing": ["none", "none", "dropout=0.3", None]})
    assert label_conditions(rows)["method"].tolist() == ["late", "late (matched)", "late (temporal, dropout=0.3)", "early"]
    assert label_conditions(rows, ("train_cohort",))["method"].tolist() == ["late", "late (matched)", "late", "early"]
    plain = rows.assign(train_cohort="full", split="random", train_missing="none")
    assert label_conditions(plain) is plain  # nothing to label: the table is untouched


def test_clean_leaderboards_keep_selection_rules_apart_and_print_their_stays():
    # issue 11: overall 0.80 and worst-group 0.70 of one run are two rows, never "0.750"
    base = {**RUN, "run_id": "r0"}
    rows = [make_row(**base, metric="auroc", value=0.80, n=61, n_pos=9),
            make_row(**base, selection="worst_group", metric="auroc", value=0.70, n=61, n_pos=9),
            make_row(**base, evaluated_on="with_cxr", metric="auroc", value=0.83, n=30, n_pos=5),
            # a CXR-only method: undefined on all stays, ranked on the stays with a CXR
            make_row(**{**base, "run_id": "d0", "method": "daft"}, metric="auroc", value=None, defined=False, n=61),
            make_row(**{**base, "run_id": "d0", "method": "daft"}, evaluated_on="with_cxr", metric="auroc", value=0.78,
                     n=30, n_pos=5)]  # fmt: skip
    tables = build_tables(to_frame(rows), None, None)
    clean = tables["clean"].set_index(["method", "selection"])
    assert clean.loc[("late", "overall"), "AUROC"] == "0.800" and clean.loc[("late", "worst_group"), "AUROC"] == "0.700"
    assert clean.loc[("daft", "overall"), "AUROC"] == "n/a" and (clean["n"] == "61").all()
    cxr = tables["clean_with_cxr"].set_index("method")
    assert cxr.loc["late", "AUROC"] == "0.830" and cxr.loc["daft", "AUROC"] == "0.780" and (cxr["n"] == "30").all()
    assert "test stays that have a CXR" in cxr.attrs["description"]
    assert "every test stay" in tables["clean"].attrs["description"]


def test_method_labels_with_their_parameters_are_separate_rows_not_repeats():
    # issue 11: MultiFair `paper` and `official-code` on one fold carry distinct labels (training.methods.method_name), so
    # the report shows two rows of one run each, never "mean ± sd (k=2)" over both
    rows = _clean_rows("p0", 0.78, method="multifair") + _clean_rows("o0", 0.74, method="multifair[official-code]")
    clean = build_tables(to_frame(rows), None, None)["clean"].set_index("method")
    assert clean.loc["multifair", "AUROC"].startswith("0.780 [") and clean.loc["multifair", "runs"] == "1"
    assert clean.loc["multifair[official-code]", "AUROC"].startswith("0.740 [")
    assert not clean["AUROC"].str.contains("k=").any()


def test_probe_rows_get_their_own_table_beside_the_gaps():
    import json as _json

    from mmfair.core.evaluation.tidy import make_row, to_frame
    from mmfair.core.reporting.tables import build_tables

    rows = [make_row(run_id="r1", method="late", modalities="ehr+cxr", task="mortality", metric="probe_auroc",
                     attribute="gender", value=v, ci_low=v - 0.05, ci_high=v + 0.05,
                     scenario_params=_json.dumps({"representation": rep}))
            for rep, v in (("cxr", 0.715), ("ehr", 0.49), ("fused", 0.52))]  # fmt: skip
    table = build_tables(None, None, to_frame(rows))["probe"]
    assert len(table) == 1 and table.iloc[0]["attribute"] == "gender"
    assert table.iloc[0]["CXR embedding"].startswith("0.715") and table.iloc[0]["fused"].startswith("0.520")
