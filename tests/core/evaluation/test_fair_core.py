"""evaluate_fairness in depth: every per-group metric and gap against sklearn/fairlearn computed
independently, one-class subgroups, the TPR/FPR split, gap intervals, attributes, operating points."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, precision_score, roc_auc_score

from mmfair.core.config import EvalFairConfig
from mmfair.core.evaluation import TIDY_COLUMNS, evaluate_fairness
from mmfair.core.evaluation import tidy
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.thresholds import choose_threshold

NEW_GAPS = {"tpr_gap": False, "fpr_gap": False, "equalized_odds_mean": False}


@pytest.fixture
def extra_gaps(monkeypatch):
    """Register the gap names proposed for DESIGN §3.4 (emitted by the core once they are in the schema)."""
    for k, v in NEW_GAPS.items():
        monkeypatch.setitem(tidy.HIGHER_IS_BETTER, k, v)


def _one(rows, **where):
    sel = rows
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (where, len(sel))
    return sel.iloc[0]


def _ece(y, s):
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
    bins = pd.Series(pd.cut(s, np.linspace(0, 1, 11), right=True, include_lowest=True))
    counts = bins.value_counts(sort=False).sort_index()
    counts = counts[counts > 0].to_numpy()
    return float(np.sum(counts * np.abs(prob_true - prob_pred)) / counts.sum())


def _reference(y, s, g, thr):
    """Everything recomputed with sklearn / fairlearn only."""
    hard = (s >= thr).astype(int)
    groups = sorted(set(g))
    ref = {}
    for k in groups:
        m = g == k
        ref[k] = {
            "n": m.sum(), "n_pos": y[m].sum(), "prevalence": y[m].mean(),
            "auroc": roc_auc_score(y[m], s[m]), "auprc": average_precision_score(y[m], s[m]),
            "tpr": true_positive_rate(y[m], hard[m]), "fpr": false_positive_rate(y[m], hard[m]),
            "ppv": precision_score(y[m], hard[m]), "selection_rate": selection_rate(y[m], hard[m]),
            "brier": brier_score_loss(y[m], s[m]), "ece": _ece(y[m], s[m]),
        }  # fmt: skip
    tprs = [ref[k]["tpr"] for k in groups]
    fprs = [ref[k]["fpr"] for k in groups]
    aucs = np.array([ref[k]["auroc"] for k in groups])
    overall = roc_auc_score(y, s)
    gaps = {
        "demographic_parity_difference": demographic_parity_difference(y, hard, sensitive_features=g),
        "demographic_parity_ratio": demographic_parity_ratio(y, hard, sensitive_features=g),
        "equalized_odds_difference": equalized_odds_difference(y, hard, sensitive_features=g),
        "equalized_odds_mean": equalized_odds_difference(y, hard, sensitive_features=g, agg="mean"),
        "equal_opportunity_difference": equal_opportunity_difference(y, hard, sensitive_features=g),
        "tpr_gap": max(tprs) - min(tprs), "fpr_gap": max(fprs) - min(fprs),
        "auroc_gap": aucs.max() - aucs.min(), "worst_group_auroc": aucs.min(),
        "es_auc": overall / (1 + np.abs(aucs - overall).sum()),
        "ece_gap": np.ptp([ref[k]["ece"] for k in groups]), "brier_gap": np.ptp([ref[k]["brier"] for k in groups]),
    }  # fmt: skip
    return ref, gaps


def test_every_group_metric_and_gap_matches_sklearn_and_fairlearn(make_run, extra_gaps):
    run = make_run("g1", thresholds={"val-youden": {"all": 0.55}})
    pred = pd.read_csv(run / "predictions_test.csv")
    # min_group_size=1: every group with both classes enters the gaps, as in fairlearn
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("race_group",), bootstrap=40, min_group_size=1))
    assert tuple(rows.columns) == TIDY_COLUMNS
    y, s, g = pred.label.to_numpy(), pred.score.to_numpy(), pred.race_group.to_numpy()
    ref, gaps = _reference(y, s, g, 0.55)
    for grp, vals in ref.items():
        for metric in ("prevalence", "auroc", "auprc", "tpr", "fpr", "ppv", "selection_rate", "brier", "ece"):
            r = _one(rows, metric=metric, group=grp)
            assert r.value == pytest.approx(vals[metric]), (grp, metric)
            assert r.n == vals["n"] and r.n_pos == vals["n_pos"] and r.defined
            assert r.ci_low <= r.value <= r.ci_high or metric == "ece"  # ECE is biased upward in resamples
    for metric, value in gaps.items():
        r = _one(rows, metric=metric, group="all", attribute="race_group")
        assert r.value == pytest.approx(value), metric
        assert r.defined and np.isfinite(r.ci_low) and np.isfinite(r.ci_high), metric
    # the split: equalized odds is the larger of the TPR and FPR gaps, its mean variant their mean
    eo, t, f = (_one(rows, metric=m).value for m in ("equalized_odds_difference", "tpr_gap", "fpr_gap"))
    assert eo == pytest.approx(max(t, f))
    assert _one(rows, metric="equalized_odds_mean").value == pytest.approx((t + f) / 2)
    assert bool(_one(rows, metric="es_auc").higher_is_better)
    assert (rows.threshold_rule == "val-youden").all()


def test_gap_names_outside_the_schema_are_not_written(make_run):
    rows = evaluate_fairness([make_run("g0")], EvalFairConfig(attributes=("gender",), bootstrap=0))
    written = set(rows.metric)
    assert {"demographic_parity_ratio", "es_auc", "ece_gap", "brier_gap", "ppv", "ece"} <= written
    assert written <= set(tidy.HIGHER_IS_BETTER)


def test_gap_interval_is_the_percentile_of_the_gap_on_each_patient_resample(make_run):
    run = make_run("g2", n_subjects=80)
    pred = pd.read_csv(run / "predictions_test.csv")
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=25, seed=3))
    y, s, g = pred.label.to_numpy(), pred.score.to_numpy(), pred.gender.to_numpy()
    hard = (s >= 0.45).astype(int)
    boot = PatientBootstrap(pred.subject_id.to_numpy(), 25, 3)
    dpd, eod, aucgap = [], [], []
    for b in range(25):
        i = boot.replicate_indices(b)
        dpd.append(demographic_parity_difference(y[i], hard[i], sensitive_features=g[i]))
        eod.append(equalized_odds_difference(y[i], hard[i], sensitive_features=g[i]))
        aucs = [roc_auc_score(y[i][g[i] == k], s[i][g[i] == k]) for k in ("F", "M")]
        aucgap.append(max(aucs) - min(aucs))
    for metric, reps in (("demographic_parity_difference", dpd), ("equalized_odds_difference", eod), ("auroc_gap", aucgap)):
        r = _one(rows, metric=metric)
        lo, hi = np.percentile(reps, [2.5, 97.5])
        assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi)), metric


def test_one_class_subgroup_is_undefined_never_zero_and_left_out(make_run, extra_gaps):
    run = make_run("g3")
    pred = pd.read_csv(run / "predictions_test.csv")
    pred.loc[pred.race_group == "ASIAN", "label"] = 0
    pred.to_csv(run / "predictions_test.csv", index=False)
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("race_group",), bootstrap=20, min_group_size=1))
    for metric in ("auroc", "auprc", "tpr"):
        r = _one(rows, metric=metric, group="ASIAN")
        assert not r.defined and np.isnan(r.value) and np.isnan(r.ci_low)
    for metric in ("fpr", "ppv", "selection_rate", "brier", "ece", "prevalence"):
        assert _one(rows, metric=metric, group="ASIAN").defined
    assert _one(rows, metric="ppv", group="ASIAN").value == 0.0  # a real 0: flagged stays, none positive
    y, s, g = pred.label.to_numpy(), pred.score.to_numpy(), pred.race_group.to_numpy()
    keep = g != "ASIAN"
    _, gaps_kept = _reference(y[keep], s[keep], g[keep], 0.45)
    # a one-class group fails the small-cell rule (n_pos = 0 < 1), so it is left out of every gap
    for metric in ("equalized_odds_difference", "equalized_odds_mean", "tpr_gap", "fpr_gap", "auroc_gap",
                   "worst_group_auroc", "demographic_parity_ratio", "demographic_parity_difference",
                   "equal_opportunity_difference", "ece_gap", "brier_gap"):  # fmt: skip
        r = _one(rows, metric=metric)
        assert r.value == pytest.approx(gaps_kept[metric]) and r.n == keep.sum(), metric
    overall = roc_auc_score(y, s)
    aucs = np.array([roc_auc_score(y[g == k], s[g == k]) for k in ("BLACK", "WHITE")])
    assert _one(rows, metric="es_auc").value == pytest.approx(overall / (1 + np.abs(aucs - overall).sum()))
    hard = (s >= 0.45).astype(int)
    assert _one(rows, metric="fpr", group="ASIAN").value == pytest.approx(false_positive_rate(y[~keep], hard[~keep]))
    # what fairlearn's MetricFrame.difference would do on its own: skip the NaN group silently
    frame = MetricFrame(metrics=lambda a, b: roc_auc_score(a, b) if len(set(a)) > 1 else np.nan,
                        y_true=y, y_pred=s, sensitive_features=g)  # fmt: skip
    assert frame.difference() == pytest.approx(_one(rows, metric="auroc_gap").value)


def test_gaps_undefined_with_one_usable_group(make_run, extra_gaps):
    run = make_run("g4")
    pred = pd.read_csv(run / "predictions_test.csv")
    pred.loc[pred.gender == "F", "label"] = 1
    pred.to_csv(run / "predictions_test.csv", index=False)
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=10, min_group_size=1))
    # F has no negative: the small-cell rule leaves it out of every gap, so one group is left and no gap exists
    for metric in ("auroc_gap", "worst_group_auroc", "es_auc", "equalized_odds_difference", "equalized_odds_mean",
                   "tpr_gap", "fpr_gap", "equal_opportunity_difference", "demographic_parity_difference",
                   "brier_gap"):  # fmt: skip
        r = _one(rows, metric=metric)
        assert not r.defined and np.isnan(r.value), metric
    assert _one(rows, metric="tpr", group="F").defined  # its own rows are still written
    # fairlearn alone would call this perfectly fair: MetricFrame.difference skips the NaN group
    y, s, g = pred.label.to_numpy(), pred.score.to_numpy(), pred.gender.to_numpy()
    frame = MetricFrame(metrics=lambda a, b: roc_auc_score(a, b) if len(set(a)) > 1 else np.nan,
                        y_true=y, y_pred=s, sensitive_features=g)  # fmt: skip
    assert frame.difference() == 0.0


def test_demographic_parity_ratio_undefined_when_nobody_is_flagged(make_run):
    run = make_run("g5", thresholds={"val-youden": {"all": 0.999}})
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=0))
    assert not _one(rows, metric="demographic_parity_ratio").defined
    assert _one(rows, metric="demographic_parity_difference").value == 0.0
    assert not _one(rows, metric="ppv", group="F").defined


def test_multilabel_every_label_matches(make_run):
    run = make_run("g6", kind="multilabel")
    pred = pd.read_csv(run / "predictions_test.csv")
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=0))
    g = pred.gender.to_numpy()
    for slug in ("sepsis", "chf", "copd"):
        y, s = pred[f"label_{slug}"].to_numpy(), pred[f"score_{slug}"].to_numpy()
        ref, gaps = _reference(y, s, g, 0.45)
        assert _one(rows, label=slug, metric="ece", group="M").value == pytest.approx(ref["M"]["ece"])
        assert _one(rows, label=slug, metric="es_auc").value == pytest.approx(gaps["es_auc"])
        assert _one(rows, label=slug, metric="demographic_parity_ratio").value == pytest.approx(
            gaps["demographic_parity_ratio"])


def test_planted_disparity_is_found_with_a_gap_interval_excluding_zero(make_run):
    run = make_run("g7", n_subjects=400)
    pred = pd.read_csv(run / "predictions_test.csv")
    f = pred.gender == "F"
    rng = np.random.default_rng(1)
    pred.loc[f, "score"] = np.clip(pred.loc[f, "score"] + rng.normal(0, 0.35, f.sum()), 0, 1)  # noisier for F
    pred.loc[f & (pred.label == 1), "score"] *= 0.6  # and under-scored positives: lower sensitivity
    pred.to_csv(run / "predictions_test.csv", index=False)
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=200))
    for metric in ("auroc_gap", "equal_opportunity_difference"):
        r = _one(rows, metric=metric)
        assert r.ci_low > 0, (metric, r.ci_low)
    assert _one(rows, metric="auroc", group="F").ci_high < _one(rows, metric="auroc", group="M").ci_low


# ----------------------------------------------------------------------------------------- attributes


def test_has_cxr_from_present_cxr_and_intersection_groups(make_run):
    run = make_run("g8")
    pred = pd.read_csv(run / "predictions_test.csv")
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("has_cxr", "race_group*gender"), bootstrap=0))
    has = rows[rows.attribute == "has_cxr"]
    assert set(has.group) == {"0", "1", "all"}
    assert _one(has, metric="auroc", group="1").n == (pred.present_cxr == 1).sum()
    inter = rows[rows.attribute == "race_group*gender"]
    assert set(inter.group) - {"all"} == {f"{r}*{g}" for r in ("WHITE", "BLACK", "ASIAN") for g in ("F", "M")}
    m = (pred.race_group == "BLACK") & (pred.gender == "F")
    assert _one(inter, metric="auroc", group="BLACK*F").value == pytest.approx(
        roc_auc_score(pred.label[m], pred.score[m]))


def test_empty_attribute_value_is_group_unknown(make_run):
    run = make_run("g9")
    pred = pd.read_csv(run / "predictions_test.csv")
    pred["language_group"] = np.where(np.arange(len(pred)) % 4 == 0, "", "English")
    pred.to_csv(run / "predictions_test.csv", index=False)
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("language_group",), bootstrap=0))
    assert set(rows.group) == {"English", "unknown", "all"}


@pytest.mark.parametrize("attrs", [("a*b*c",), ("gender*gender",), (" gender",), ()])
def test_bad_attribute_specs_refused(attrs):
    with pytest.raises(ValueError):
        EvalFairConfig(attributes=attrs)


# ------------------------------------------------------------------------------------ operating points


@pytest.mark.parametrize("rule", ["val-sens-0.8", "val-spec-0.8", "val-prevalence", "0.3"])
def test_rules_are_chosen_on_validation_and_recorded(make_run, rule):
    run = make_run("t1")
    val = pd.read_csv(run / "predictions_val.csv")
    test = pd.read_csv(run / "predictions_test.csv")
    thr = choose_threshold(val.label.to_numpy(), val.score.to_numpy(), rule)
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), threshold_rule=rule, bootstrap=0))
    assert (rows.threshold_rule == rule).all()
    m = test.gender.to_numpy() == "F"
    hard = (test.score.to_numpy() >= thr).astype(int)
    assert _one(rows, metric="tpr", group="F").value == pytest.approx(true_positive_rate(test.label[m], hard[m]))


def test_recalibration_fitted_on_validation(make_run):
    from sklearn.isotonic import IsotonicRegression

    run = make_run("t2")
    val = pd.read_csv(run / "predictions_val.csv")
    test = pd.read_csv(run / "predictions_test.csv")
    cfg = EvalFairConfig(attributes=("gender",), recalibrate="isotonic", bootstrap=0)
    rows = evaluate_fairness([run], cfg)
    assert (rows.threshold_rule == "val-youden+isotonic").all()
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(val.score, val.label)
    s = iso.predict(test.score)
    m = test.gender.to_numpy() == "M"
    assert _one(rows, metric="brier", group="M").value == pytest.approx(brier_score_loss(test.label[m], s[m]))
    platt = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), recalibrate="platt", bootstrap=0))
    raw = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=0))
    # Platt is monotone: AUROC unchanged; calibration changes
    assert _one(platt, metric="auroc", group="M").value == pytest.approx(_one(raw, metric="auroc", group="M").value)
    assert (platt.threshold_rule == "val-youden+platt").all()
    assert _one(platt, metric="ece", group="M").value != pytest.approx(_one(raw, metric="ece", group="M").value)


def test_threshold_json_still_wins_for_stored_rules(make_run):
    run = make_run("t3", thresholds={"val-youden": {"all": 0.8}, "0.5": {"all": 0.5}})
    (run / "predictions_val.csv").unlink()  # never needed for a stored rule
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=0))
    test = pd.read_csv(run / "predictions_test.csv")
    m = test.gender.to_numpy() == "F"
    hard = (test.score.to_numpy() >= 0.8).astype(int)
    assert _one(rows, metric="selection_rate", group="F").value == pytest.approx(hard[m].mean())
    assert json.loads((run / "threshold.json").read_text())["val-youden"]["all"] == 0.8


def test_length_of_stay_one_vs_rest_per_class_and_accuracy(make_run):
    from sklearn.metrics import accuracy_score

    run = make_run("los", kind="multiclass")
    val = pd.read_csv(run / "predictions_val.csv")
    test = pd.read_csv(run / "predictions_test.csv")
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=20))
    assert {f"class_{c}" for c in range(7)} | {"all"} == set(rows.label)
    g = test.gender.to_numpy()
    for c in (0, 3):
        y, s = (test.label == c).astype(int).to_numpy(), test[f"score_{c}"].to_numpy()
        thr = choose_threshold((val.label == c).astype(int), val[f"score_{c}"], "val-youden")
        ref, gaps = _reference(y, s, g, thr)
        assert _one(rows, label=f"class_{c}", metric="auroc", group="F").value == pytest.approx(ref["F"]["auroc"])
        assert _one(rows, label=f"class_{c}", metric="tpr", group="M").value == pytest.approx(ref["M"]["tpr"])
        assert _one(rows, label=f"class_{c}", metric="auroc_gap").value == pytest.approx(gaps["auroc_gap"])
    yhat = test[[f"score_{c}" for c in range(7)]].to_numpy().argmax(axis=1)
    for grp in ("F", "M"):
        m = g == grp
        r = _one(rows, label="all", metric="accuracy", group=grp)
        assert r.value == pytest.approx(accuracy_score(test.label[m], yhat[m])) and r.ci_low <= r.value <= r.ci_high
