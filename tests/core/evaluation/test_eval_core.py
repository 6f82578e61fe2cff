"""evaluate_clean / evaluate_missing / evaluate_fairness on fake run folders."""

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
)
from sklearn.metrics import average_precision_score, cohen_kappa_score, recall_score, roc_auc_score

from mmfair.core.config import EvalFairConfig, EvalMissingConfig
from mmfair.core.evaluation import (
    TIDY_COLUMNS,
    evaluate_clean,
    evaluate_fairness,
    evaluate_missing,
)
from mmfair.core.evaluation.scenarios import draw_seed


def _one(rows, **where):
    sel = rows
    if "evaluated_on" in rows.columns and "evaluated_on" not in where and (rows["scenario"] == "none").all():
        where = {"evaluated_on": "all", **where}  # clean rows come twice: all stays and stays with a CXR
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (where, len(sel))
    return sel.iloc[0]


# --------------------------------------------------------------------------------------------- clean


def test_clean_binary_matches_sklearn(make_run):
    run = make_run("r1")
    pred = pd.read_csv(run / "predictions_test.csv")
    rows = evaluate_clean([run], bootstrap=100, seed=0)
    assert tuple(rows.columns) == TIDY_COLUMNS
    auroc = _one(rows, metric="auroc")
    assert auroc.value == pytest.approx(roc_auc_score(pred.label, pred.score))
    assert _one(rows, metric="auprc").value == pytest.approx(average_precision_score(pred.label, pred.score))
    assert auroc.ci_low < auroc.value < auroc.ci_high
    assert auroc.n == len(pred) and auroc.n_pos == pred.label.sum() and auroc.defined
    assert auroc.scenario == "none" and auroc.label == "all" and auroc.group == "all"
    assert auroc.selection == "overall" and auroc.threshold_rule == "val-youden"
    assert auroc.missing_rate == pytest.approx(1 - pred.present_cxr.mean())
    assert bool(auroc.higher_is_better) and not bool(_one(rows, metric="brier").higher_is_better)
    assert _one(rows, metric="train_seconds").value == pytest.approx(6.0)
    assert _one(rows, metric="peak_memory_mb").value == pytest.approx(180.0)
    assert _one(rows, metric="n_params").value == 12345


def test_clean_phenotype_per_label_and_macro(make_run):
    run = make_run("p1", kind="multilabel")
    pred = pd.read_csv(run / "predictions_test.csv")
    rows = evaluate_clean([run], bootstrap=20)
    per = [roc_auc_score(pred[f"label_{s}"], pred[f"score_{s}"]) for s in ("sepsis", "chf", "copd")]
    assert _one(rows, metric="auroc", label="chf").value == pytest.approx(per[1])
    assert _one(rows, metric="auroc", label="all").value == pytest.approx(np.mean(per))


def test_clean_los(make_run):
    run = make_run("l1", kind="multiclass")
    rows = evaluate_clean([run], bootstrap=10)
    assert {"accuracy", "kappa", "kappa_linear", "macro_f1"} <= set(rows.metric)
    # the names say which kappa: unweighted, and the linear-weighted one training selects on (issue 11)
    pred = pd.read_csv(run / "predictions_test.csv")
    yhat = pred[[f"score_{c}" for c in range(7)]].to_numpy().argmax(axis=1)
    assert _one(rows, metric="kappa").value == pytest.approx(cohen_kappa_score(pred.label, yhat))
    linear = _one(rows, metric="kappa_linear")
    assert linear.value == pytest.approx(cohen_kappa_score(pred.label, yhat, weights="linear"))
    assert linear.value != pytest.approx(_one(rows, metric="kappa").value)


def test_clean_unscored_stays_and_coverage_rule(make_run):
    run = make_run("r2")
    pred = pd.read_csv(run / "predictions_test.csv")
    # a method that cannot score 10 stays is undefined on all stays (no subset of its own choosing; issue 11),
    # and n still counts the evaluated stays
    pred.loc[pred.index[:10], "score"] = np.nan
    pred.to_csv(run / "predictions_test.csv", index=False, na_rep="")
    row = _one(evaluate_clean([run], bootstrap=0), metric="auroc")
    assert row.n == len(pred) and not row.defined and np.isnan(row.value)
    # a CXR-only method: undefined on all stays, scored on the stays with a CXR, n printed for each
    with_cxr = pred.present_cxr.to_numpy() > 0
    pred["score"] = pd.read_csv(run / "predictions_test.csv")["score"]
    pred.loc[~with_cxr, "score"] = np.nan
    pred.loc[with_cxr, "score"] = pred.loc[with_cxr, "score"].fillna(0.5)
    pred.to_csv(run / "predictions_test.csv", index=False, na_rep="")
    rows = evaluate_clean([run], bootstrap=20)
    on_all = _one(rows, metric="auroc", evaluated_on="all")
    on_cxr = _one(rows, metric="auroc", evaluated_on="with_cxr")
    assert not on_all.defined and on_all.n == len(pred)
    assert on_cxr.defined and on_cxr.n == with_cxr.sum() and on_cxr.n_pos == pred.label[with_cxr].sum()
    assert on_cxr.value == pytest.approx(roc_auc_score(pred.label[with_cxr], pred.score[with_cxr]))


# ------------------------------------------------------------------------------------------- missing


def test_missing_removes_requested_share_among_cxr_stays(make_run, fake_predict):
    run = make_run("m1")
    pred = pd.read_csv(run / "predictions_test.csv")
    present = pred.present_cxr.to_numpy() > 0
    fn = fake_predict()
    cfg = EvalMissingConfig(rates=(0.5, 0.2), draws=2, seed=3, bootstrap=30)
    rows = evaluate_missing([run], cfg, fn)
    assert tuple(rows.columns) == TIDY_COLUMNS
    auroc = rows[rows.metric == "auroc"]
    assert sorted(auroc.missing_rate.round(2).unique()) == [0.0, 0.2, 0.5]  # rate 0 always included
    assert len(auroc) == 1 + 2 + 2
    assert (auroc.n == present.sum()).all()  # evaluated stays: those that had a CXR
    assert (auroc.scenario == "mcar").all()
    params = json.loads(auroc.scenario_params.iloc[0])
    assert params["modality"] == "cxr" and params["stratified_on"] == "label"
    for _, r in auroc.iterrows():
        assert r.draw_seed == draw_seed(3, json.loads(r.scenario_params)["requested_rate"], r.draw)
    for _, split, override in fn.calls:
        keep = override["cxr"]
        assert split == "test" and keep.shape == present.shape
        assert keep[~present].all()
        removed = present & ~keep
        rate = removed.sum() / present.sum()
        assert removed.sum() in {round(r * present.sum()) for r in (0.0, 0.2, 0.5)}
        y = pred.label.to_numpy()
        for v in (0, 1):  # stratified: the same share from positives and negatives
            stratum = present & (y == v)
            assert abs(removed[stratum].sum() - rate * stratum.sum()) <= 1
    # rate 0 equals the clean metric restricted to the CXR stays
    clean = _one(auroc, draw_seed=draw_seed(3, 0.0, 0))
    assert clean.value == pytest.approx(roc_auc_score(pred.label[present], pred.score[present]))
    # reproducible
    again = evaluate_missing([run], cfg, fake_predict())
    pd.testing.assert_frame_equal(rows, again)


def test_missing_caches_predict_calls(make_run, fake_predict):
    run = make_run("m2")
    fn = fake_predict()
    evaluate_missing([run], EvalMissingConfig(rates=(0.0, 1.0), draws=3, bootstrap=0), fn)
    # rate 0: one mask; rate 1: every draw removes every CXR -> one identical mask, predicted once
    assert len(fn.calls) == 2


def test_missing_undefined_when_method_cannot_score(make_run, fake_predict):
    run = make_run("m3")
    rows = evaluate_missing([run], EvalMissingConfig(rates=(0.3, 1.0), bootstrap=10), fake_predict(handles_missing=False))
    auroc = rows[rows.metric == "auroc"].set_index("missing_rate")
    pred = pd.read_csv(run / "predictions_test.csv")
    n_cxr = int(pred.present_cxr.sum())
    assert auroc.loc[0.0, "defined"] and auroc.loc[0.0, "n"] == n_cxr
    r03 = auroc[(auroc.index > 0.2) & (auroc.index < 0.4)]
    # it cannot score the stays that lost their CXR: undefined on the evaluated stays, never a value on the
    # shrinking subset it can still score (which would never degrade; issue 11)
    assert not r03.defined.any() and (r03.n == n_cxr).all()
    assert not auroc.loc[1.0, "defined"].any() and (auroc.loc[1.0, "n"] == n_cxr).all()
    assert (rows.evaluated_on == "with_cxr").all() and (rows.test_cohort == "matched").all()


def test_missing_phenotype_stratifies_on_first_label(make_run, fake_predict):
    rows = evaluate_missing([make_run("m4", kind="multilabel")], EvalMissingConfig(rates=(0.5,), bootstrap=0), fake_predict())
    assert json.loads(rows.scenario_params.iloc[0])["stratified_on"] == "label_sepsis"
    assert {"sepsis", "chf", "copd", "all"} == set(rows.label)


# ------------------------------------------------------------------------------------------ fairness


def test_fairness_groups_and_gaps_match_sklearn_and_fairlearn(make_run):
    run = make_run("f1", thresholds={"val-youden": {"all": 0.55}})
    pred = pd.read_csv(run / "predictions_test.csv")
    # min_group_size 1: every group enters the gaps, so they can be compared with fairlearn's over all groups
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("race_group",), bootstrap=50, min_group_size=1))
    assert tuple(rows.columns) == TIDY_COLUMNS
    y, s, g = pred.label.to_numpy(), pred.score.to_numpy(), pred.race_group.to_numpy()
    hard = (s >= 0.55).astype(int)  # the stored validation threshold, not one chosen on test
    for grp in ("WHITE", "BLACK", "ASIAN"):
        m = g == grp
        assert _one(rows, metric="auroc", group=grp).value == pytest.approx(roc_auc_score(y[m], s[m]))
        assert _one(rows, metric="auprc", group=grp).value == pytest.approx(average_precision_score(y[m], s[m]))
        assert _one(rows, metric="tpr", group=grp).value == pytest.approx(recall_score(y[m], hard[m]))
        assert _one(rows, metric="fpr", group=grp).value == pytest.approx(1 - recall_score(1 - y[m], 1 - hard[m]))
        assert _one(rows, metric="tpr", group=grp).n == m.sum()
    assert _one(rows, metric="demographic_parity_difference").value == pytest.approx(
        demographic_parity_difference(y, hard, sensitive_features=g))
    assert _one(rows, metric="equalized_odds_difference").value == pytest.approx(
        equalized_odds_difference(y, hard, sensitive_features=g))
    assert _one(rows, metric="equal_opportunity_difference").value == pytest.approx(
        equal_opportunity_difference(y, hard, sensitive_features=g))
    aucs = [roc_auc_score(y[g == k], s[g == k]) for k in ("WHITE", "BLACK", "ASIAN")]
    assert _one(rows, metric="auroc_gap").value == pytest.approx(max(aucs) - min(aucs))
    assert _one(rows, metric="worst_group_auroc").value == pytest.approx(min(aucs))
    gap = _one(rows, metric="auroc_gap")
    assert gap.group == "all" and gap.attribute == "race_group" and not bool(gap.higher_is_better)
    assert gap.ci_low <= gap.value <= gap.ci_high


def test_threshold_from_validation_file_not_test(make_run):
    run = make_run("f2", thresholds={"val-youden": {"all": 0.9}})
    pred = pd.read_csv(run / "predictions_test.csv")
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=0))
    m = pred.gender.to_numpy() == "F"
    hard = (pred.score.to_numpy() >= 0.9).astype(int)
    assert _one(rows, metric="tpr", group="F").value == pytest.approx(recall_score(pred.label[m], hard[m]))
    assert (rows.threshold_rule == "val-youden").all()


def test_rule_missing_from_file_is_chosen_on_validation(make_run):
    run = make_run("f3")
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), threshold_rule="0.5", bootstrap=0))
    pred = pd.read_csv(run / "predictions_test.csv")
    m = pred.gender.to_numpy() == "M"
    hard = (pred.score.to_numpy() >= 0.5).astype(int)
    assert _one(rows, metric="tpr", group="M").value == pytest.approx(recall_score(pred.label[m], hard[m]))


def test_one_class_group_is_undefined_and_left_out_of_gaps(make_run):
    run = make_run("f4")
    pred = pd.read_csv(run / "predictions_test.csv")
    asian = pred.race_group == "ASIAN"
    pred.loc[asian, "label"] = 0  # a one-class subgroup
    pred.to_csv(run / "predictions_test.csv", index=False)
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("race_group",), bootstrap=30, min_group_size=1))
    cell = _one(rows, metric="auroc", group="ASIAN")
    assert not cell.defined and np.isnan(cell.value)  # never 0
    assert not _one(rows, metric="tpr", group="ASIAN").defined
    assert _one(rows, metric="fpr", group="ASIAN").defined
    y, s, g = pred.label.to_numpy(), pred.score.to_numpy(), pred.race_group.to_numpy()
    keep = g != "ASIAN"
    aucs = [roc_auc_score(y[g == k], s[g == k]) for k in ("WHITE", "BLACK")]
    gap = _one(rows, metric="auroc_gap")
    assert gap.defined and gap.value == pytest.approx(max(aucs) - min(aucs))
    assert gap.n == keep.sum()
    hard = (s >= 0.45).astype(int)
    assert _one(rows, metric="equalized_odds_difference").value == pytest.approx(
        equalized_odds_difference(y[keep], hard[keep], sensitive_features=g[keep]))
    # a one-class group is out of every gap, demographic parity included (docs/architecture.md)
    assert _one(rows, metric="demographic_parity_difference").value == pytest.approx(
        demographic_parity_difference(y[keep], hard[keep], sensitive_features=g[keep]))


def test_gap_undefined_with_fewer_than_two_defined_groups(make_run):
    run = make_run("f5")
    pred = pd.read_csv(run / "predictions_test.csv")
    pred.loc[pred.gender == "F", "label"] = 1
    pred.to_csv(run / "predictions_test.csv", index=False)
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=10))
    for metric in ("auroc_gap", "worst_group_auroc", "equalized_odds_difference"):
        r = _one(rows, metric=metric)
        assert not r.defined and np.isnan(r.value)


def test_fairness_missing_attribute_names_file_and_column(make_run):
    from mmfair.core.errors import InputFileError

    with pytest.raises(InputFileError, match="language_group"):
        evaluate_fairness([make_run("f6")], EvalFairConfig(attributes=("language_group",), bootstrap=0))
