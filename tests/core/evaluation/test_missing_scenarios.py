"""The eval-missing mechanisms: exact shares, only where requested, recorded parameters."""

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mmfair.core.config import EvalMissingConfig
from mmfair.core.errors import ConfigError
from mmfair.core.evaluation import evaluate_missing
from mmfair.core.evaluation.scenarios import level_removal, n_to_remove
from mmfair.core.registry import SCENARIOS


@pytest.fixture
def stays():
    rng = np.random.default_rng(1)
    n = 997
    present = rng.random(n) < 0.65
    label = (rng.random(n) < 0.3).astype(int)
    group = rng.choice(["WHITE", "BLACK", "ASIAN", "OTHER"], size=n, p=[0.5, 0.25, 0.15, 0.1]).astype(object)
    return present, label, group


def test_all_mechanisms_registered():
    assert {"mcar", "group", "label", "natural"} <= set(SCENARIOS.names())


@pytest.mark.parametrize("profile", [{"WHITE": 0.1, "BLACK": 0.4}, {"BLACK": 1.0}, {"ASIAN": 0.33, "*": 0.05}])
def test_group_removal_exact_per_group_and_stratified(stays, profile):
    present, label, group = stays
    keep = level_removal(present, group, label, profile, seed=5)
    removed = present & ~keep
    assert keep[~present].all()
    for g in ("WHITE", "BLACK", "ASIAN", "OTHER"):
        rate = profile.get(g, profile.get("*", 0.0))
        members = present & (group == g)
        assert removed[members].sum() == n_to_remove(rate, members.sum()), g
        for v in (0, 1):  # label-stratified inside the group
            stratum = members & (label == v)
            assert np.floor(rate * stratum.sum() + 1e-9) <= removed[stratum].sum() <= np.ceil(rate * stratum.sum() - 1e-9)
    assert removed.sum() == sum(n_to_remove(profile.get(g, profile.get("*", 0.0)), (present & (group == g)).sum())
                                for g in ("WHITE", "BLACK", "ASIAN", "OTHER"))  # fmt: skip


def test_unknown_level_is_an_error(stays):
    present, label, group = stays
    with pytest.raises(ConfigError, match="BLAK.*available: ASIAN, BLACK, OTHER, WHITE"):
        level_removal(present, group, label, {"BLAK": 0.4}, seed=0)


def test_config_parses_profiles_and_refuses_mixups():
    cfg = EvalMissingConfig(mechanism="group", by="race_group", level_rates=("WHITE=0.1,BLACK=0.4", "WHITE=0.2"))
    assert cfg.level_rates == ({"WHITE": 0.1, "BLACK": 0.4}, {"WHITE": 0.2})
    assert EvalMissingConfig().rate_grid() == (0.2, 0.5, 1.0)
    for bad in (dict(mechanism="group", level_rates=("WHITE=0.1",)),  # no --by
                dict(mechanism="label"),  # no profile
                dict(mechanism="label", level_rates=("1=1.5",)),
                dict(mechanism="natural", rates=(0.2,)),
                dict(mechanism="mcar", level_rates=("1=0.5",)),
                dict(mechanism="group", by="race_group", level_rates=("WHITE:0.1",))):  # fmt: skip
        with pytest.raises(ValidationError):
            EvalMissingConfig(**bad)


def _rows(rows, metric="auroc"):
    return rows[(rows.metric == metric) & (rows.label == "all") & (rows.attribute == "all")]


def test_group_mechanism_end_to_end(make_run, fake_predict):
    run = make_run("g1", n_subjects=300)
    pred = pd.read_csv(run / "predictions_test.csv")
    present = pred.present_cxr.to_numpy() > 0
    race = pred.race_group.to_numpy()
    fn = fake_predict()
    cfg = EvalMissingConfig(mechanism="group", by="race_group", level_rates=("WHITE=0.1,BLACK=0.4",), draws=2,
                            bootstrap=0, seed=4)  # fmt: skip
    rows = _rows(evaluate_missing([run], cfg, fn))
    assert (rows.scenario == "group").all() and len(rows) == 1 + 2
    assert (rows.n == present.sum()).all()
    n_w, n_b = (present & (race == "WHITE")).sum(), (present & (race == "BLACK")).sum()
    expected = (n_to_remove(0.1, n_w) + n_to_remove(0.4, n_b)) / present.sum()
    top = rows[rows.missing_rate > 0]
    assert np.allclose(top.missing_rate, expected)
    params = json.loads(top.scenario_params.iloc[0])
    assert params["by"] == "race_group" and params["rates"] == {"BLACK": 0.4, "WHITE": 0.1}
    assert params["modality"] == "cxr" and params["stratified_on"] == "label"
    assert top.draw_seed.nunique() == 2 and set(top.draw) == {0, 1}
    clean = rows[rows.missing_rate == 0]
    assert len(clean) == 1 and json.loads(clean.scenario_params.iloc[0])["rates"] == {}
    masks = [c[2]["cxr"] for c in fn.calls]
    assert len(masks) == 3
    for keep in masks[1:]:
        removed = present & ~keep
        assert removed[race == "ASIAN"].sum() == 0  # only the requested groups lose it
        assert removed[race == "WHITE"].sum() == n_to_remove(0.1, n_w)
        assert removed[race == "BLACK"].sum() == n_to_remove(0.4, n_b)
    assert not np.array_equal(masks[1], masks[2])  # the two draws differ


def test_label_mechanism_is_mnar(make_run, fake_predict):
    run = make_run("l1", n_subjects=300)
    pred = pd.read_csv(run / "predictions_test.csv")
    present = pred.present_cxr.to_numpy() > 0
    y = pred.label.to_numpy()
    fn = fake_predict()
    cfg = EvalMissingConfig(mechanism="label", level_rates=({"1": 0.6, "0": 0.2},), bootstrap=0)
    rows = _rows(evaluate_missing([run], cfg, fn))
    keep = fn.calls[-1][2]["cxr"]
    removed = present & ~keep
    n1, n0 = (present & (y == 1)).sum(), (present & (y == 0)).sum()
    assert removed[y == 1].sum() == n_to_remove(0.6, n1) and removed[y == 0].sum() == n_to_remove(0.2, n0)
    top = rows[rows.missing_rate > 0].iloc[0]
    assert top.missing_rate == pytest.approx((n_to_remove(0.6, n1) + n_to_remove(0.2, n0)) / present.sum())
    assert json.loads(top.scenario_params)["by"] == "label"


def test_natural_is_the_whole_fold(make_run, fake_predict):
    run = make_run("n1")
    pred = pd.read_csv(run / "predictions_test.csv")
    fn = fake_predict()
    rows = _rows(evaluate_missing([run], EvalMissingConfig(mechanism="natural", bootstrap=0), fn))
    assert len(rows) == 1
    r = rows.iloc[0]
    assert r.n == len(pred) and r.missing_rate == pytest.approx(1 - pred.present_cxr.mean())
    assert pd.isna(r.draw_seed) and r.scenario == "natural"
    assert fn.calls[0][2]["cxr"].all()  # nothing removed
    from sklearn.metrics import roc_auc_score

    assert r.value == pytest.approx(roc_auc_score(pred.label, pred.score))


def test_natural_differs_from_mcar_at_the_same_rate(make_run, fake_predict):
    """The planted removal here is not at random in the fake data (scores depend on the CXR), and
    natural evaluates another population; the two scenarios must not silently coincide."""
    run = make_run("n2", n_subjects=300)
    nat = _rows(evaluate_missing([run], EvalMissingConfig(mechanism="natural", bootstrap=0), fake_predict())).iloc[0]
    mcar = _rows(evaluate_missing([run], EvalMissingConfig(rates=(round(nat.missing_rate, 3),), bootstrap=0), fake_predict()))
    assert mcar.missing_rate.max() == pytest.approx(nat.missing_rate, abs=0.01)
    assert abs(mcar.value.iloc[-1] - nat.value) > 1e-6


def test_ehr_modality_goes_through_present_override(make_run):
    run = make_run("e1")
    seen = []

    def fn(run_dir, split, override):
        seen.append(dict(override))
        return pd.read_csv(run_dir / f"predictions_{split}.csv")

    rows = evaluate_missing([run], EvalMissingConfig(modality="ehr", rates=(0.5,), bootstrap=0), fn)
    n = len(pd.read_csv(run / "predictions_test.csv"))
    assert set(seen[-1]) == {"ehr"} and (~seen[-1]["ehr"]).sum() == n_to_remove(0.5, n)
    assert json.loads(rows.scenario_params.iloc[-1])["modality"] == "ehr"


def test_config_file_profiles_with_integer_keys(tmp_path):
    from mmfair.core.config import load_config_file

    path = tmp_path / "missing.yaml"
    path.write_text("mechanism: label\nlevel_rates:\n  - {1: 0.6, 0: 0.2}\n")
    cfg = EvalMissingConfig.model_validate(load_config_file(path))
    assert cfg.level_rates == ({"1": 0.6, "0": 0.2},)


def test_group_rows_and_gap_per_draw(make_run, fake_predict):
    from sklearn.metrics import roc_auc_score

    run = make_run("g2", n_subjects=300)
    pred = pd.read_csv(run / "predictions_test.csv")
    present = pred.present_cxr.to_numpy() > 0
    fn = fake_predict()
    # one draw (the keep-mask of the last call is the row's); min_group_size 1: every group enters the gaps
    cfg = EvalMissingConfig(mechanism="group", by="race_group", level_rates=("BLACK=0.5",), bootstrap=20, draws=1,
                            min_group_size=1)  # fmt: skip
    rows = evaluate_missing([run], cfg, fn)
    top = rows[rows.scenario_params.str.contains('"BLACK": 0.5')]
    keep = fn.calls[-1][2]["cxr"]
    scored = fake_predict()(run, "test", {"cxr": keep})
    groups = top[(top.attribute == "race_group") & (top.metric == "auroc")].set_index("group")
    assert set(groups.index) == {"WHITE", "BLACK", "ASIAN"}
    values, tpr, fpr, selected = {}, {}, {}, {}
    hard = scored.score.to_numpy() >= 0.45  # the run's stored val-youden threshold
    y = pred.label.to_numpy()
    for g in ("WHITE", "BLACK", "ASIAN"):
        m = present & (pred.race_group == g).to_numpy()
        values[g] = roc_auc_score(y[m], scored.score[m])
        tpr[g], fpr[g] = hard[m & (y == 1)].mean(), hard[m & (y == 0)].mean()
        selected[g] = hard[m].mean()
        assert groups.loc[g, "value"] == pytest.approx(values[g]) and groups.loc[g, "n"] == m.sum()
        # a group row's missing_rate is the group's own share: half of BLACK, nothing elsewhere
        assert groups.loc[g, "missing_rate"] == pytest.approx((~keep[m]).mean())
        assert groups.loc[g, "missing_rate"] == (pytest.approx(0.5, abs=0.02) if g == "BLACK" else 0.0)
    gap = top[(top.metric == "auroc_gap")].iloc[0]
    assert gap.attribute == "race_group" and gap.group == "all" and not gap.higher_is_better
    assert gap.value == pytest.approx(max(values.values()) - min(values.values()))
    assert gap.ci_low <= gap.ci_high
    assert gap.missing_rate == pytest.approx((~keep[present]).mean())  # the overall share: the curve's x
    # the threshold gaps (eval-fair's definitions) at the validation threshold, lower is better
    eod = top[top.metric == "equalized_odds_difference"].iloc[0]
    spread = lambda d: max(d.values()) - min(d.values())  # noqa: E731
    assert eod.value == pytest.approx(max(spread(tpr), spread(fpr))) and not eod.higher_is_better
    dpd = top[top.metric == "demographic_parity_difference"].iloc[0]
    assert dpd.value == pytest.approx(spread(selected)) and dpd.defined and dpd.ci_low <= dpd.value <= dpd.ci_high
    assert not dpd.higher_is_better
    # overall rows are unchanged by the group rows; no group rows without attributes under mcar
    assert (rows[(rows.attribute == "all")].group == "all").all()
    plain = evaluate_missing([run], EvalMissingConfig(rates=(0.5,), bootstrap=0), fake_predict())
    assert (plain.attribute == "all").all()
    with pytest.raises(Exception, match="nope"):
        evaluate_missing([run], EvalMissingConfig(rates=(0.5,), attributes=("nope",), bootstrap=0), fake_predict())


def test_a_three_stay_group_does_not_enter_the_gaps_or_their_summaries(make_run, fake_predict):
    # issue 11, done-when: three stays with a CXR form their own group; eval-missing writes its per-group row
    # (n = 3, the report never shows it) but leaves it out of every gap, as eval-fair does
    from sklearn.metrics import roc_auc_score

    from mmfair.core.evaluation.robustness_summary import summarise
    from mmfair.core.reporting import build_tables

    run = make_run("tiny", n_subjects=300)
    path = run / "predictions_test.csv"
    pred = pd.read_csv(path)
    present = pred.present_cxr.to_numpy() > 0
    tiny = np.flatnonzero(present & (pred.label.to_numpy() == 0))[:2].tolist() + \
        np.flatnonzero(present & (pred.label.to_numpy() == 1))[:1].tolist()
    pred.loc[tiny, "race_group"] = "TINY"
    pred.to_csv(path, index=False)
    cfg = EvalMissingConfig(rates=(0.5,), attributes=("race_group",), bootstrap=20, draws=1, min_group_size=3)
    fn = fake_predict()
    rows = evaluate_missing([run], cfg, fn)
    clean = rows[rows.missing_rate == 0]
    per_group = clean[(clean.metric == "auroc") & (clean.attribute == "race_group")].set_index("group")
    assert per_group.loc["TINY", "n"] == 3  # written, with its count, for the report's small-cell rule
    y, s, g = pred.label.to_numpy(), pred.score.to_numpy(), pred.race_group.to_numpy()
    big = [k for k in ("WHITE", "BLACK", "ASIAN") if min((m := present & (g == k)).sum(), y[m].sum(), (m & (y == 0)).sum()) >= 3]
    aucs = [roc_auc_score(y[present & (g == k)], s[present & (g == k)]) for k in big]
    gap = clean[(clean.metric == "auroc_gap")].iloc[0]
    assert gap.value == pytest.approx(max(aucs) - min(aucs))  # TINY (AUROC of 3 stays) left out
    assert gap.n == sum(int((present & (g == k)).sum()) for k in big)
    # ... and so out of the gap's robustness summary in the report
    table = pd.concat([rows, summarise(rows, metrics=("auroc",))], ignore_index=True)
    gaps = build_tables(None, table, None, min_group_size=3)["robustness_gaps"]
    curve = rows[(rows.metric == "auroc_gap")].sort_values("missing_rate")
    expected = (curve.value.iloc[0] + curve.value.iloc[1]) / 2  # trapezoid over [0, 0.5] / 0.5
    row = gaps[gaps.gap.str.startswith("AUROC gap")].iloc[0]
    assert row.RR == f"{expected:.3f}"


@pytest.mark.parametrize("kind", ["binary", "multilabel", "multiclass"])
@pytest.mark.parametrize("rate, seed", [(0.3, 0), (0.5, 7), (0.002, 3), (1.0, 1)])
def test_train_time_and_test_time_removal_give_the_same_mask(kind, rate, seed):
    # issue 11: one removal rule — training's --train-missing-rate (training/data.remove_cxr) and eval-missing's
    # MCAR scenario remove the CXR of exactly the same stays for the same stays, labels, rate and seed
    import torch

    from mmfair.core.evaluation.missing import _strata
    from mmfair.core.evaluation.run_folder import task_spec
    from mmfair.core.evaluation.scenarios import MCAR, ScenarioPoint, StayContext
    from mmfair.core.training.data import Split, remove_cxr

    rng = np.random.default_rng(seed)
    n = 257
    present = rng.random(n) < 0.6
    pred = pd.DataFrame({"stay_id": np.arange(n), "subject_id": np.arange(n), "present_cxr": present.astype(int)})
    if kind == "binary":
        labels = (rng.random((n, 1)) < 0.3).astype(np.float32)
        pred["label"], pred["score"] = labels[:, 0].astype(int), 0.5
    elif kind == "multilabel":
        labels = (rng.random((n, 3)) < 0.3).astype(np.float32)
        for k, slug in enumerate(("a", "b", "c")):
            pred[f"label_{slug}"], pred[f"score_{slug}"] = labels[:, k].astype(int), 0.5
    else:
        labels = rng.integers(0, 7, n)
        pred["label"] = labels
        for c in range(7):
            pred[f"score_{c}"] = 1 / 7
    split = Split("train", np.arange(n), {}, {"cxr": torch.from_numpy(present.copy())}, torch.as_tensor(labels))
    removed = remove_cxr(split, rate, seed)
    strata, col = _strata(pred, task_spec(pred, "test"))
    keep = MCAR().apply(ScenarioPoint({"requested_rate": rate}, rate, 1), StayContext(pred, present, strata, col), seed).keep
    np.testing.assert_array_equal(removed, np.flatnonzero(present & ~keep))
    np.testing.assert_array_equal(split.present["cxr"].numpy(), present & keep)
    assert removed.size == int(np.floor(rate * present.sum() + 0.5))  # exact count, halves up


def test_draws_share_one_pooled_interval_and_a_rate_that_removes_nothing_warns(make_run, fake_predict, caplog):
    # issue 11: MCAR intervals include the randomness of the removal (replicates pooled over the draws), and a
    # requested rate that rounds to no stay says so in the log, in scenario_params and in the report
    from mmfair.core.reporting import build_tables

    run = make_run("pool")
    n_cxr = int(pd.read_csv(run / "predictions_test.csv").present_cxr.sum())
    tiny_rate = 0.4 / n_cxr  # round(0.4) = 0 stays
    rows = evaluate_missing([run], EvalMissingConfig(rates=(tiny_rate, 0.5), draws=3, bootstrap=40), fake_predict())
    half = rows[(rows.metric == "auroc") & rows.scenario_params.str.contains('"requested_rate": 0.5')]
    assert len(half) == 3 and half.ci_low.nunique() == 1 and half.ci_high.nunique() == 1
    assert half.ci_low.iloc[0] <= half.value.min() and half.value.max() <= half.ci_high.iloc[0]
    nothing = rows[rows.scenario_params.str.contains(f'"requested_rate": {tiny_rate}')]
    assert {json.loads(p)["removed"] for p in nothing.scenario_params} == {0}
    assert "rounds to nothing" in caplog.text
    table = build_tables(None, rows, None)["missing"]
    assert f"{round(tiny_rate, 4) * 100:g}% (realised 0%)" in table.columns
    assert any("realised" in note for note in table.attrs["footnotes"])
