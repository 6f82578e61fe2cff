"""Robustness summaries against a hand-computed example."""

import json

import numpy as np
import pandas as pd
import pytest

from mmfair.core.evaluation import robustness_summary as robustness
from mmfair.core.evaluation.robustness_summary import effective_robustness, r_star, relative_robustness, update_summaries
from mmfair.core.evaluation.tidy import make_row, read_results, to_frame, upsert_results

RATES = (0.0, 0.2, 0.5, 1.0)
#: Validation AUROC of the single-modality runs, what r*'s comparator is chosen on (cxr-0 is best on validation
#: but cannot score the stays whose CXR was removed: not comparable).
VAL = pd.DataFrame({"run_id": ["ehr-0", "cxr-0", "static-0", "ehr-d3"], "label": "all",
                    "value": [0.70, 0.80, 0.90, 0.75]})  # fmt: skip


def summarise(table, **kw):
    return robustness.summarise(table, **{"validation": VAL, **kw})


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


def test_r_star_comparator_is_chosen_on_validation_not_on_test(table):
    # cxr-0 has the best validation AUROC but no value at rate 1 (it cannot score a stay whose CXR was
    # removed): not comparable, and said so; ehr-0 is the comparator
    early = json.loads(_get(summarise(table), "early-0", "r_star").scenario_params)
    assert early["comparator"] == "ehr (ehr)" and early["comparator_runs"] == ["ehr-0"]
    assert early["not_comparable"] == ["cxr (cxr)"] and early["comparator_val_auroc"] == pytest.approx(0.70)
    # a second EHR-only method, worse on test (flat 0.60) but better on validation: it is the comparator,
    # although the maximum of test values (ehr-0's 0.72) would have crossed at 0.5
    rows = list(table.to_dict("records")) + _curve_rows("ehr2-0", "ehr2", "ehr", [0.60] * 4, [0.58] * 4)
    val = pd.concat([VAL, pd.DataFrame({"run_id": ["ehr2-0"], "label": ["all"], "value": [0.95]})])
    rs = _get(summarise(to_frame(rows), validation=val), "early-0", "r_star")
    params = json.loads(rs.scenario_params)
    assert params["comparator"] == "ehr2 (ehr)" and not rs.defined and params["crossed"] is False
    # without validation scores there is no comparator: undefined, with the reason
    none = json.loads(_get(summarise(table, validation=None), "early-0", "r_star").scenario_params)
    assert "no validation scores" in none["reason"]


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


def _gap_rows(run_id, method, modalities, gaps, highs, *, metric="auroc_gap", train_missing=None):
    rows = []
    for rate, gap, hi in zip((0.0, 0.5, 1.0), gaps, highs):
        params = {"modality": "cxr", "stratified_on": "label", "requested_rate": rate}
        extra = {} if train_missing is None else {"train_missing": train_missing}
        rows.append(make_row(run_id=run_id, method=method, modalities=modalities, task="mortality", fold=0,
                             scenario="mcar", scenario_params=json.dumps(params), missing_rate=rate,
                             attribute="race_group", group="all", metric=metric, value=gap,
                             ci_low=None if gap is None else gap - 0.02, ci_high=hi, defined=gap is not None,
                             **extra))  # fmt: skip
    return rows


def test_gap_curves_keep_their_direction():
    rows = _gap_rows("late-0", "late", "ehr+cxr", (0.05, 0.08, 0.15), (0.07, 0.10, 0.17))
    s = summarise(to_frame(rows))
    rr = _get(s, "late-0", "relative_robustness")
    assert rr.attribute == "race_group" and rr.value == pytest.approx(0.5 * 0.065 + 0.5 * 0.115)
    assert not bool(rr.higher_is_better)
    params = json.loads(rr.scenario_params)
    assert params["of"] == "auroc_gap" and params["direction"] == "lower is better"
    rs = _get(s, "late-0", "r_star")  # reported, but no single-modality run to compare with
    assert not rs.defined and "no single-modality" in json.loads(rs.scenario_params)["reason"]


def test_gap_r_star_mirrors_auroc_with_the_upper_bound():
    # fusion gap upper bounds 0.07, 0.10, 0.17 against the smallest single-modality gap at each rate:
    # ehr's flat 0.09 and cxr's 0.12, 0.12, undefined -> best 0.09, 0.09, 0.09: first above at 0.5
    rows = _gap_rows("late-0", "late", "ehr+cxr", (0.05, 0.08, 0.15), (0.07, 0.10, 0.17))
    rows += _gap_rows("ehr-0", "ehr", "ehr", (0.09, 0.09, 0.09), (0.11, 0.11, 0.11))
    rows += _gap_rows("cxr-0", "cxr", "cxr", (0.12, 0.12, None), (0.14, 0.14, None))
    rows += _gap_rows("fair-0", "fair", "ehr+cxr", (0.02, 0.03, 0.04), (0.04, 0.06, 0.08))
    for metric in ("equalized_odds_difference", "demographic_parity_difference"):
        rows += _gap_rows("late-0", "late", "ehr+cxr", (0.10, 0.20, 0.30), (0.12, 0.22, 0.32), metric=metric)
    s = summarise(to_frame(rows))
    by_of = s.assign(of=s.scenario_params.map(lambda p: json.loads(p)["of"]))
    late = by_of[(by_of.run_id == "late-0") & (by_of.metric == "r_star")].set_index("of")
    assert late.loc["auroc_gap", "value"] == pytest.approx(0.5) and bool(late.loc["auroc_gap", "higher_is_better"])
    fair = _get(s, "fair-0", "r_star")
    fair_params = json.loads(fair.scenario_params)
    assert not fair.defined and fair_params["crossed"] is False and "upper bound never above" in fair_params["reason"]
    # no single-modality curve for these two gaps: reported with a reason, and every gap's direction labelled
    assert set(late.index) == {"auroc_gap", "equalized_odds_difference", "demographic_parity_difference"}
    assert not late.loc["demographic_parity_difference", "defined"]
    rr = by_of[by_of.metric.isin(["relative_robustness", "effective_robustness"])]
    assert not rr.higher_is_better.astype(bool).any()
    assert {json.loads(p)["direction"] for p in rr.scenario_params} == {"lower is better"}
    # effective robustness of a gap: fair vs late shifted by -0.03: terms 0, 0.03-0.05, 0.04-0.12
    assert _get(s, "fair-0", "effective_robustness").value == pytest.approx((0 - 0.02 - 0.08) / 3)


def test_train_time_missingness_is_compared_like_with_like(table):
    # a late run trained with CXR dropout: flat curve; its own reference is itself, not the plain late run
    rows = list(table.to_dict("records"))
    dropout = _curve_rows("late-d3", "late", "ehr+cxr", [0.78, 0.78, 0.77, 0.76], [0.76, 0.76, 0.75, 0.74])
    early_dropout = _curve_rows("early-d3", "early", "ehr+cxr", [0.80, 0.79, 0.77, 0.74], [0.78, 0.77, 0.75, 0.72])
    for r in dropout + early_dropout:
        r["train_missing"] = "dropout=0.3"
    s = summarise(to_frame(rows + dropout + early_dropout))
    er = _get(s, "late-d3", "effective_robustness")
    params = json.loads(er.scenario_params)
    assert er.value == pytest.approx(0.0) and params["reference_runs"] == ["late-d3"]
    assert params["reference_train_missing"] == "dropout=0.3"
    assert er.train_missing == "dropout=0.3"
    # early with dropout against late with dropout (shift +0.02): terms 0, -0.01, -0.02, -0.04
    assert _get(s, "early-d3", "effective_robustness").value == pytest.approx(-0.07 / 4)
    # the plain runs keep their hand-computed values: the dropout runs are not averaged into the reference
    assert _get(s, "early-0", "effective_robustness").value == pytest.approx(-0.0275)
    assert json.loads(_get(s, "early-0", "effective_robustness").scenario_params)["reference_runs"] == ["late-0"]
    # no single-modality run trained with dropout: r* falls back to the plain ones, and says so
    rs = _get(s, "late-d3", "r_star")
    assert json.loads(rs.scenario_params)["single_train_missing"] == "none"
    assert not rs.defined and json.loads(rs.scenario_params)["crossed"] is False  # 0.74 never below 0.72
    # with an EHR-only run trained under the same protocol (flat 0.77), that one is the comparator
    ehr_dropout = _curve_rows("ehr-d3", "ehr", "ehr", [0.77] * 4, [0.75] * 4)
    for r in ehr_dropout:
        r["train_missing"] = "dropout=0.3"
    s2 = summarise(to_frame(rows + dropout + early_dropout + ehr_dropout))
    rs2 = _get(s2, "late-d3", "r_star")
    assert rs2.value == pytest.approx(0.0) and json.loads(rs2.scenario_params)["single_train_missing"] == "dropout=0.3"
    assert _get(s2, "early-0", "r_star").value == pytest.approx(0.5)  # the plain runs still use the plain ones


def test_reference_and_single_modality_comparators_follow_the_modalities(table):
    rows = list(table.to_dict("records"))
    # the static modality: a late run over all three, a static-only model (method ehr) better than any fusion
    rows += _curve_rows("late-s", "late", "ehr+cxr+static", [0.90, 0.88, 0.86, 0.84], [0.88, 0.86, 0.84, 0.82])
    rows += _curve_rows("static-0", "ehr", "static", [0.95] * 4, [0.93] * 4)
    s = summarise(to_frame(rows))
    # each fusion run against the reference trained on its own modalities
    late_s = _get(s, "late-s", "effective_robustness")
    assert late_s.value == pytest.approx(0.0)
    params = json.loads(late_s.scenario_params)
    assert params["reference_runs"] == ["late-s"] and params["reference_modalities"] == "ehr+cxr+static"
    early = json.loads(_get(s, "early-0", "effective_robustness").scenario_params)
    assert early["reference_runs"] == ["late-0"] and early["reference_modalities"] == "ehr+cxr"
    assert _get(s, "early-0", "effective_robustness").value == pytest.approx(-0.0275)  # as without static runs
    # a single-modality run: the smallest reference set holding it
    assert json.loads(_get(s, "ehr-0", "effective_robustness").scenario_params)["reference_runs"] == ["late-0"]
    assert json.loads(_get(s, "static-0", "effective_robustness").scenario_params)["reference_runs"] == ["late-s"]
    # r*: the static-only model is a comparator for the three-modality run only, not for ehr+cxr
    assert _get(s, "early-0", "r_star").value == pytest.approx(0.5)
    assert _get(s, "late-s", "r_star").value == pytest.approx(0.0)  # 0.88 < 0.95 from the clean point on


def test_a_cxr_only_run_is_not_comparable_under_removal_and_r_star_uses_validation(make_run, fake_predict):
    # issue 11, done-when: a fusion run, an EHR-only run and a CXR-only run on one fold under MCAR CXR removal.
    # Every row is scored on the same stays (those that had a CXR: n printed equal); the CXR-only run cannot
    # score the stays whose CXR was removed, so it is undefined there — not a value on a shrinking subset —
    # and r*'s comparator is the EHR-only run, chosen on validation among the comparable ones.
    from mmfair.core.config import EvalMissingConfig
    from mmfair.core.evaluation import evaluate_missing
    from mmfair.core.evaluation.robustness_summary import validation_scores

    runs = {}
    for name, mods in (("late", ["ehr", "cxr"]), ("ehr", ["ehr"]), ("cxr", ["cxr"])):
        run = make_run(f"{name}-0", method=name)
        cfg = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**cfg, "modalities": mods}))
        runs[name] = run
    scoring, blind = fake_predict(), fake_predict(handles_missing=False)

    def predict(run_dir, split, override, ehr_transform=None):
        return (blind if run_dir.name == "cxr-0" else scoring)(run_dir, split, override, ehr_transform)

    rows = evaluate_missing(list(runs.values()), EvalMissingConfig(rates=(0.5, 1.0), draws=2, bootstrap=50), predict)
    auroc = rows[rows.metric == "auroc"]
    n_cxr = int(pd.read_csv(runs["late"] / "predictions_test.csv").present_cxr.sum())
    assert (auroc.n == n_cxr).all() and (auroc.evaluated_on == "with_cxr").all() and (auroc.test_cohort == "matched").all()
    cxr_removed = auroc[(auroc.run_id == "cxr-0") & (auroc.missing_rate > 0)]
    assert len(cxr_removed) == 4 and not cxr_removed.defined.any()
    late_removed = auroc[(auroc.run_id == "late-0") & (auroc.missing_rate > 0)]
    assert late_removed.defined.all()
    # realised removal on every row: exact counts of the stays that had a CXR
    for _, r in auroc.iterrows():
        p = json.loads(r.scenario_params)
        assert p["removed"] == int(np.floor(p["requested_rate"] * n_cxr + 0.5))
        assert p["removed_share"] == pytest.approx(p["removed"] / n_cxr, abs=1e-6)
    s = robustness.summarise(rows, validation=validation_scores(runs.values()), metrics=("auroc",))
    rs = json.loads(_get(s, "late-0", "r_star").scenario_params)
    assert rs["comparator"] == "ehr (ehr)" and rs["not_comparable"] == ["cxr (cxr)"]
    assert not _get(s, "cxr-0", "effective_robustness").defined  # its curve has undefined points
    assert _get(s, "late-0", "effective_robustness").value == pytest.approx(0.0)
    assert _get(s, "late-0", "r_star").evaluated_on == "with_cxr"
