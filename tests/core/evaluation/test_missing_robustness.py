"""Robustness summaries against a hand-computed example."""

import json

import numpy as np
import pandas as pd
import pytest

from mmfair.core.evaluation.robustness import (
    effective_robustness,
    r_star,
    relative_robustness,
    summarise,
    update_summaries,
)
from mmfair.core.evaluation.tidy import make_row, read_results, to_frame, upsert_results

RATES = (0.0, 0.2, 0.5, 1.0)


def _curve_rows(run_id, method, modalities, values, lows=None, *, fold=0, draws=None, scenario="mcar"):
    rows = []
    for i, (rate, v) in enumerate(zip(RATES, values)):
        per_draw = draws.get(rate, [v]) if draws else [v]
        for d, vd in enumerate(per_draw):
            lo = None if lows is None else (lows[i] if not draws or rate not in draws else vd - 0.02)
            params = {"modality": "cxr", "stratified_on": "label", "requested_rate": rate}
            rows.append(make_row(
                run_id=run_id, method=method, modalities=modalities, task="mortality", fold=fold, seed=0,
                test_cohort="full", train_missing_rate=0.0, scenario=scenario,
                scenario_params=json.dumps(params, sort_keys=True), missing_rate=rate, draw=d, draw_seed=d + 1,
                metric="auroc", value=v if vd is None else vd, defined=vd is not None and not np.isnan(vd),
                n=100, n_pos=30, ci_low=lo, ci_high=None if lo is None else vd + 0.02,
            ))  # fmt: skip
    return rows


@pytest.fixture
def table():
    rows = []
    # late: two draws at 0.5 (0.73, 0.75 -> mean 0.74, lower bounds 0.71, 0.73 -> 0.72)
    rows += _curve_rows("late-0", "late", "ehr+cxr", [0.80, 0.78, 0.74, 0.70], [0.78, 0.76, None, 0.68],
                        draws={0.5: [0.73, 0.75]})  # fmt: skip
    rows += _curve_rows("early-0", "early", "ehr+cxr", [0.82, 0.79, 0.72, 0.66], [0.79, 0.76, 0.69, 0.63])
    rows += _curve_rows("robust-0", "robust", "ehr+cxr", [0.85] * 4, [0.83] * 4)
    rows += _curve_rows("ehr-0", "ehr", "ehr", [0.72] * 4, [0.70] * 4)
    rows += _curve_rows("cxr-0", "cxr", "cxr", [0.70, 0.70, 0.70, None], [0.65, 0.65, 0.65, None])
    # another fold without a late run
    rows += _curve_rows("early-1", "early", "ehr+cxr", [0.80, 0.70, 0.60, 0.50], [0.7] * 4, fold=1)
    return to_frame(rows)


def _get(s, run_id, metric):
    r = s[(s.run_id == run_id) & (s.metric == metric)]
    assert len(r) == 1, (run_id, metric, len(r))
    return r.iloc[0]


def test_functions_hand_computed():
    x = np.array(RATES)
    # 0.2·(0.82+0.79)/2 + 0.3·(0.79+0.72)/2 + 0.5·(0.72+0.66)/2 = 0.161 + 0.2265 + 0.345
    assert relative_robustness(x, [0.82, 0.79, 0.72, 0.66]) == pytest.approx(0.7325)
    assert relative_robustness([0.0, 0.5], [0.8, 0.6]) == pytest.approx(0.7)  # span 0.5, not 1
    assert np.isnan(relative_robustness([0.0], [0.8]))
    assert np.isnan(relative_robustness(x, [0.8, np.nan, 0.7, 0.6]))
    # shift 0.02: terms 0, -0.01, -0.04, -0.06
    assert effective_robustness([0.82, 0.79, 0.72, 0.66], [0.80, 0.78, 0.74, 0.70]) == pytest.approx(-0.0275)
    assert r_star(x, [0.79, 0.76, 0.69, 0.63], [1, 1, 1, 1], [0.72] * 4) == (0.5, True)
    assert r_star(x, [0.78, 0.76, 0.72, 0.68], [1, 1, 1, 1], [0.72] * 4) == (1.0, True)  # strictly below
    rs, crossed = r_star(x, [0.83] * 4, [1] * 4, [0.72] * 4)
    assert np.isnan(rs) and not crossed
    assert r_star(x, [0.8] * 4, [1, 1, np.nan, 1], [0.72] * 4) == (0.5, True)  # cannot score: below
    assert r_star(x, [0.8, 0.7, 0.7, 0.7], [1] * 4, [np.nan, np.nan, 0.72, 0.72]) == (0.5, True)  # skipped rates


def test_summary_rows_hand_computed(table):
    s = summarise(table)
    assert (s.scenario == "mcar").all() and s.missing_rate.isna().all() and s.ci_low.isna().all()
    assert _get(s, "early-0", "relative_robustness").value == pytest.approx(0.7325)
    # late: draws averaged at 0.5 -> 0.74; 0.2·0.79 + 0.3·0.76 + 0.5·0.72
    assert _get(s, "late-0", "relative_robustness").value == pytest.approx(0.746)
    assert _get(s, "early-0", "effective_robustness").value == pytest.approx(-0.0275)
    assert _get(s, "late-0", "effective_robustness").value == pytest.approx(0.0)
    # robust: flat 0.85 vs late shifted by +0.05: terms 0, 0.85-0.83, 0.85-0.79, 0.85-0.75
    assert _get(s, "robust-0", "effective_robustness").value == pytest.approx((0 + 0.02 + 0.06 + 0.10) / 4)
    # r*: best single = max(ehr, cxr) = 0.72 at every rate (cxr undefined at 1.0 is ignored)
    assert _get(s, "early-0", "r_star").value == pytest.approx(0.5)
    late = _get(s, "late-0", "r_star")
    assert late.value == pytest.approx(1.0)  # lower bound 0.72 at 0.5 is not *below* 0.72
    robust = _get(s, "robust-0", "r_star")
    params = json.loads(robust.scenario_params)
    assert not robust.defined and np.isnan(robust.value) and params["crossed"] is False and "never" in params["reason"]
    assert params["of"] == "auroc" and params["curve_rates"] == list(RATES)
    # single-modality runs get no r_star; cxr-only has an undefined point -> no relative robustness
    assert not ((s.run_id.isin(["ehr-0", "cxr-0"])) & (s.metric == "r_star")).any()
    assert not _get(s, "cxr-0", "relative_robustness").defined
    # no late run on fold 1: effective robustness undefined with the reason; no single modality: r* undefined
    er1 = _get(s, "early-1", "effective_robustness")
    assert not er1.defined and "no late curve" in json.loads(er1.scenario_params)["reason"]
    assert not _get(s, "early-1", "r_star").defined
    assert _get(s, "early-1", "relative_robustness").value == pytest.approx(0.2 * 0.75 + 0.3 * 0.65 + 0.5 * 0.55)
    assert bool(_get(s, "early-0", "relative_robustness").higher_is_better)
    # another reference method
    s2 = summarise(table, reference="early")
    assert _get(s2, "early-0", "effective_robustness").value == pytest.approx(0.0)


def test_update_summaries_replaces_stale_rows(tmp_path, table):
    path = tmp_path / "missing.csv"
    upsert_results(path, table)
    first = update_summaries(path)
    again = update_summaries(path)
    pd.testing.assert_frame_equal(first, again)
    merged = read_results(path)
    assert len(merged) == len(table) + len(first)
    # drop the late run's curve: its summaries and the effective robustness of the others change
    kept = merged[merged.run_id != "late-0"]
    kept.to_csv(path, index=False)
    update_summaries(path)
    now = read_results(path)
    assert not (now.run_id == "late-0").any()
    assert not now[(now.run_id == "early-0") & (now.metric == "effective_robustness")].defined.iloc[0]


def test_gap_curves_keep_their_direction():
    rows = []
    for rate, gap in zip((0.0, 0.5, 1.0), (0.05, 0.08, 0.15)):
        params = {"modality": "cxr", "stratified_on": "label", "requested_rate": rate}
        rows.append(make_row(run_id="late-0", method="late", modalities="ehr+cxr", task="mortality", fold=0,
                             scenario="mcar", scenario_params=json.dumps(params), missing_rate=rate,
                             attribute="race_group", group="all", metric="auroc_gap", value=gap, ci_low=gap - 0.02))  # fmt: skip
    s = summarise(to_frame(rows))
    rr = _get(s, "late-0", "relative_robustness")
    assert rr.attribute == "race_group" and rr.value == pytest.approx(0.5 * 0.065 + 0.5 * 0.115)
    assert rr.higher_is_better is False or not bool(rr.higher_is_better)
    assert json.loads(rr.scenario_params)["of"] == "auroc_gap"
    assert not (s.metric == "r_star").any()  # r* only for higher-is-better metrics
