"""Each metric against scikit-learn / a direct count on the same arrays, weighted and not."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from mmfair.core.evaluation import metrics as M


@pytest.fixture
def arrays():
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(int)
    s = np.round(np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1), 1)  # heavy ties
    return y, s


def test_point_metrics_match_sklearn(arrays):
    y, s = arrays
    assert M.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert M.brier(y, s) == pytest.approx(brier_score_loss(y, s), abs=1e-12)
    assert M.prevalence(y) == pytest.approx(y.mean())


def test_weighted_equals_repeated_rows(arrays):
    y, s = arrays
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, size=(4, y.size)).astype(float)
    got_roc, got_ap, got_brier = M.auroc(y, s, w), M.auprc(y, s, w), M.brier(y, s, w)
    for b in range(4):
        idx = np.repeat(np.arange(y.size), w[b].astype(int))
        assert got_roc[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
        assert got_ap[b] == pytest.approx(average_precision_score(y[idx], s[idx]), abs=1e-12)
        assert got_brier[b] == pytest.approx(brier_score_loss(y[idx], s[idx]), abs=1e-12)


def test_rates_match_confusion_counts(arrays):
    y, s = arrays
    hard = (s >= 0.5).astype(int)
    tp = np.sum((y == 1) & (hard == 1))
    fp = np.sum((y == 0) & (hard == 1))
    assert M.tpr(y, hard) == pytest.approx(tp / y.sum())
    assert M.fpr(y, hard) == pytest.approx(fp / (1 - y).sum())
    assert M.selection_rate(y, hard) == pytest.approx(hard.mean())


def test_one_class_is_nan_not_zero_and_silent():
    y = np.zeros(5)
    s = np.linspace(0.1, 0.9, 5)
    assert np.isnan(M.auroc(y, s))
    assert np.isnan(M.auprc(y, s))
    assert np.isnan(M.auprc(np.ones(5), s))  # trivially 1 with no negative: undefined, not 1
    assert np.isnan(M.tpr(y, (s > 0.5).astype(int)))
    assert np.isnan(M.fpr(np.ones(5), (s > 0.5).astype(int)))
    assert np.isnan(M.auroc([], []))


def test_rates_refuse_scores():
    with pytest.raises(ValueError, match="threshold the scores first"):
        M.selection_rate([0, 1], [0.2, 0.7])


def test_non_binary_labels_refused():
    with pytest.raises(ValueError, match="only 0 and 1"):
        M.auroc([0, 2], [0.1, 0.2])


def test_multiclass_from_confusion_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 200)
    p = np.where(rng.random(200) < 0.5, y, rng.integers(0, 5, 200))
    cm = M.confusion(y, p, 7)
    assert M.accuracy_from_confusion(cm)[0] == pytest.approx(accuracy_score(y, p))
    assert M.kappa_from_confusion(cm)[0] == pytest.approx(cohen_kappa_score(y, p))
    assert M.macro_f1_from_confusion(cm)[0] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    w = rng.integers(0, 3, size=(3, 200)).astype(float)
    cmb = M.confusion(y, p, 7, w)
    for b in range(3):
        idx = np.repeat(np.arange(200), w[b].astype(int))
        assert M.kappa_from_confusion(cmb)[b] == pytest.approx(cohen_kappa_score(y[idx], p[idx]))


# --- values worked by hand on a few rows -----------------------------------------------------------------


def test_auroc_by_hand_with_a_tie():
    # positives 0.5 and 0.9, negatives 0.5 and 0.2: pairs (0.5 vs 0.5) = 1/2, the three others = 1
    assert M.auroc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875
    assert M.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75  # 0.35 loses to 0.4 only


def test_auprc_by_hand_a_tie_is_one_threshold():
    # descending: 0.9 (pos): P 1, R 1/2; the tie at 0.5 (pos + neg): P 2/3, R 1 -> AP = 1/2 + 1/2 · 2/3
    assert M.auprc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(5 / 6, abs=1e-15)
    assert M.auprc([0, 1, 0, 1], [0.1, 0.7, 0.8, 0.9]) == pytest.approx(5 / 6, abs=1e-15)


def test_auroc_auprc_together_equal_the_two_functions_by_hand():
    y, s = [1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]
    roc, ap = M.auroc_auprc(y, s)
    assert (roc, ap) == (pytest.approx(0.875), pytest.approx(5 / 6))
    assert isinstance(roc, float) and isinstance(ap, float)
    w = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [1, 0, 0, 1]])
    roc_b, ap_b = M.auroc_auprc(y, s, w)
    # replicate 2 drops the first positive: AUROC (1/2 + 1)/2; AP: the tie first, P 1/2, R 1
    # replicate 3 keeps 0.9 (pos) and 0.1 (neg): perfect
    assert roc_b == pytest.approx([0.875, 0.75, 1.0])
    assert ap_b == pytest.approx([5 / 6, 0.5, 1.0])
    empty_roc, empty_ap = M.auroc_auprc([], [], np.zeros((2, 0)))
    assert empty_roc.shape == empty_ap.shape == (2,) and np.isnan(empty_roc).all() and np.isnan(empty_ap).all()
    assert all(np.isnan(v) for v in M.auroc_auprc([], []))
    assert all(np.isnan(v) for v in M.auroc_auprc([1, 1], [0.2, 0.3]))  # one class


def test_weights_repeat_rows_by_hand():
    y, s = [0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]
    # weight 2 on the tied negative: pairs per positive 0.5: (0.5 vs 0.5) twice at 1/2, vs 0.2 once -> 2;
    # positive 0.9: 3 -> U = 5 over 2 · 3 pairs
    assert M.auroc(y, s, [[2, 1, 1, 1]]) == pytest.approx([5 / 6])
    assert M.auprc(y, s, np.array([[0, 1, 1, 1]])) == pytest.approx([1.0])
    assert M.auroc(y, s, np.array([2, 1, 1, 1])).shape == (1,)  # 1-D weights: one replicate
    assert np.isnan(M.auroc(y, s, [[0, 1, 0, 1]])[0])  # the replicate holds positives only
    assert np.isnan(M.auprc(y, s, [[1, 0, 1, 0]])[0])  # ... negatives only


def test_brier_prevalence_by_hand():
    assert M.brier([0, 1], [0.2, 0.6]) == pytest.approx(0.1)  # (0.04 + 0.16) / 2
    assert M.brier([0, 1], [0.2, 0.6], [[3, 1], [0, 0]])[0] == pytest.approx(0.07)  # (3 · 0.04 + 0.16) / 4
    assert np.isnan(M.brier([0, 1], [0.2, 0.6], [[3, 1], [0, 0]])[1])  # an empty replicate
    assert M.prevalence([0, 1, 1, 0]) == 0.5
    assert M.prevalence([0, 1], [[1, 3]]).tolist() == [0.75]
    assert np.isnan(M.brier([], [])) and np.isnan(M.prevalence([]))


def test_rates_by_hand():
    y, p = [1, 1, 0, 0, 1], [1, 0, 1, 0, 1]  # TP 2, FN 1, FP 1, TN 1
    assert M.tpr(y, p) == pytest.approx(2 / 3)
    assert M.fpr(y, p) == 0.5
    assert M.selection_rate(y, p) == 0.6
    assert M.ppv(y, p) == pytest.approx(2 / 3)
    w = [[1, 1, 1, 1, 1], [0, 2, 1, 3, 0]]  # replicate 2: positives (2 · FN), negatives (1 · FP, 3 · TN)
    assert M.tpr(y, p, w) == pytest.approx([2 / 3, 0.0])
    assert M.fpr(y, p, w) == pytest.approx([0.5, 0.25])
    assert M.selection_rate(y, p, w) == pytest.approx([0.6, 1 / 6])
    assert M.ppv(y, p, w) == pytest.approx([2 / 3, 0.0])
    assert np.isnan(M.ppv([1, 0], [0, 0]))  # nothing predicted positive: NaN, not 0
    assert np.isnan(M.selection_rate([], []))


@pytest.mark.parametrize("fn", [M.tpr, M.fpr, M.selection_rate, M.ppv])
def test_every_rate_refuses_scores_naming_the_values(fn):
    with pytest.raises(ValueError) as err:
        fn([0, 1, 1], [0.0, 0.7, 1.0])
    assert str(err.value) == ("y_pred must be hard 0/1 predictions (threshold the scores first; a rate on "
                              "probabilities is silently wrong), got values [0.7]")


def test_input_errors_name_the_sizes_and_values():
    with pytest.raises(ValueError) as err:
        M.auroc([0, 1, 1], [0.1, 0.2])
    assert str(err.value) == "y_true has 3 rows but y_score has 2"
    with pytest.raises(ValueError) as err:
        M.tpr([0, 1, 1], [0, 1])
    assert str(err.value) == "y_true has 3 rows but y_pred has 2"
    with pytest.raises(ValueError) as err:
        M.brier([0, 2, 3], [0.1, 0.2, 0.3])
    assert str(err.value) == "y_true must hold only 0 and 1 for y_score, got values [2.0, 3.0]"
    with pytest.raises(ValueError) as err:
        M.auprc([0, 1], [0.1, 0.2], np.ones((2, 3)))
    assert str(err.value) == "weights must have shape [B, 2] (one column per row), got (2, 3)"
    with pytest.raises(ValueError, match=r"^weights must have shape \[B, 2\] \(one column per row\), got \(1, 1, 2\)$"):
        M.auroc([0, 1], [0.1, 0.2], np.ones((1, 1, 2)))
    with pytest.raises(ValueError) as err:
        M.confusion([0, 1, 2], [0, 1], 3)
    assert str(err.value) == "y_true has 3 rows but y_pred has 2"


def test_confusion_counts_by_hand_and_float_labels():
    cm = M.confusion([0.0, 0.0, 1.0, 2.0, 2.0], [0.0, 1.0, 1.0, 2.0, 1.0], 3)  # labels read from a CSV as floats
    assert cm.shape == (1, 3, 3)
    assert cm[0].tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 1]]
    cmb = M.confusion([0, 1], [1, 1], 2, [[2, 0], [1, 3]])
    assert cmb.tolist() == [[[0, 2], [0, 0]], [[0, 1], [0, 3]]]


def test_multiclass_scores_by_hand():
    cm = M.confusion([0, 0, 1, 2, 2], [0, 1, 1, 2, 1], 3)  # [[1, 1, 0], [0, 1, 0], [0, 1, 1]]
    assert M.accuracy_from_confusion(cm).tolist() == [0.6]
    # two replicates of different sizes: accuracy is per replicate
    two = np.stack([cm[0], np.diag([1.0, 0.0, 0.0])])
    assert M.accuracy_from_confusion(two) == pytest.approx([0.6, 1.0])
    # kappa: p_o = 3/5, margins rows (2, 1, 2) columns (1, 3, 1): p_e = (2 + 3 + 2)/25 -> (3/5 - 7/25)/(1 - 7/25)
    assert M.kappa_from_confusion(cm) == pytest.approx([(15 - 7) / (25 - 7)])
    # linear weights w = |i - j| / 2: Σ w·O = 1, Σ w·E = (1.2 + 0.2 + 0.2 + 1.2)/2 + (0.4 + 0.4) = 2.2 -> 1 - 1/2.2
    assert M.kappa_linear_from_confusion(cm) == pytest.approx([6 / 11])
    # F1 per class: 2·1/(2+1), 2·1/(1+3), 2·1/(2+1) -> mean 11/18
    assert M.macro_f1_from_confusion(cm) == pytest.approx([11 / 18])
    # a class that is neither true nor predicted does not enter the mean
    absent = np.array([[[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    assert M.macro_f1_from_confusion(absent) == pytest.approx([2 / 3])
    assert np.isnan(M.kappa_from_confusion(np.array([[[3.0, 0.0], [0.0, 0.0]]]))[0])  # p_e = 1
    empty = np.zeros((1, 3, 3))
    for fn in (M.accuracy_from_confusion, M.kappa_from_confusion, M.kappa_linear_from_confusion,
               M.macro_f1_from_confusion):
        assert np.isnan(fn(empty)[0])


def test_linear_kappa_on_two_classes_equals_cohen():
    cm = np.array([[[2.0, 1.0], [0.0, 1.0]]])  # p_o 3/4, p_e (3·2 + 1·2)/16 = 1/2 -> kappa 1/2
    assert M.kappa_from_confusion(cm) == pytest.approx([0.5])
    assert M.kappa_linear_from_confusion(cm) == pytest.approx([0.5])
    assert np.isnan(M.kappa_linear_from_confusion(np.full((1, 1, 1), 3.0))[0])  # one class: every weight is 0


def test_calibration_bins_are_right_closed():
    assert M.calibration_bins([0.0, 0.1, 0.15, 0.2, 0.95, 1.0]).tolist() == [0, 0, 1, 1, 9, 9]
    assert M.calibration_bins([0.25, 0.5, 0.75, 1.0], n_bins=4).tolist() == [0, 1, 2, 3]
    assert M.calibration_bins([]).tolist() == []
    for bad in ([-0.1, 0.5], [0.5, 1.2]):
        with pytest.raises(ValueError, match=r"^calibration needs probabilities in \[0, 1\]$"):
            M.calibration_bins(bad)


def test_ece_by_hand():
    y, s = [0, 1, 1, 0], [0.05, 0.15, 0.95, 0.9]
    # bin 0: |0 - 0.05|; bin 1: |1 - 0.15|; bin 9: |1 - 0.95|; 0.9 sits on an inner edge: bin 8, |0 - 0.9|
    assert M.ece(y, s) == pytest.approx((0.05 + 0.85 + 0.05 + 0.9) / 4)
    # weights 3 on the first row
    assert M.ece(y, s, [[3, 1, 1, 1]]) == pytest.approx([(3 * 0.05 + 0.85 + 0.05 + 0.9) / 6])
    assert M.ece(y, s, n_bins=2) == pytest.approx((abs(-0.05 + 0.85) + abs(0.05 - 0.9)) / 4)
    assert np.isnan(M.ece([], []))


def test_group_gaps_by_hand():
    assert M.group_difference([0.2, 0.5, 0.3]) == pytest.approx(0.3)
    assert M.group_ratio([0.2, 0.5, 0.3]) == pytest.approx(0.4)
    assert M.group_min([0.2, 0.5, 0.3]) == 0.2
    per_replicate = [[0.2, 0.5], [0.1, 0.1], [0.0, 0.0]]
    assert M.group_difference(per_replicate) == pytest.approx([0.3, 0.0, 0.0])
    ratio = M.group_ratio(per_replicate)
    assert ratio[:2] == pytest.approx([0.4, 1.0]) and np.isnan(ratio[2])  # nobody selected: no ratio
    assert M.group_min(per_replicate).tolist() == [0.2, 0.1, 0.0]
    assert np.isnan(M.group_ratio([0.0, 0.0]))
    for fn in (M.group_difference, M.group_ratio, M.group_min):
        assert np.isnan(fn([0.4]))  # one group
        assert fn([[0.4], [0.5]]).shape == (2,) and np.isnan(fn([[0.4], [0.5]])).all()
        with pytest.raises(ValueError, match="^per-group values need a last axis of groups$"):
            fn(0.4)
    assert isinstance(M.group_difference([0.2, 0.5]), float) and isinstance(M.group_ratio([0.2, 0.5]), float)


def test_equalized_odds_and_es_auc_by_hand():
    tpr, fpr = [0.6, 0.9], [0.1, 0.3]  # differences 0.3 and 0.2
    assert M.equalized_odds(tpr, fpr) == pytest.approx(0.3)
    assert M.equalized_odds(tpr, fpr, agg="mean") == pytest.approx(0.25)
    assert M.equalized_odds([[0.6, 0.9], [0.5, 0.5]], [[0.1, 0.3], [0.2, 0.6]]) == pytest.approx([0.3, 0.4])
    with pytest.raises(ValueError, match=r"^agg must be 'worst_case' or 'mean', got 'max'$"):
        M.equalized_odds(tpr, fpr, agg="max")
    assert M.es_auc(0.8, [0.7, 0.9]) == pytest.approx(0.8 / 1.2)
    assert M.es_auc(0.8, [0.8, 0.8]) == pytest.approx(0.8)
    assert M.es_auc([0.8, 0.6], [[0.7, 0.9], [0.6, 0.6]]) == pytest.approx([0.8 / 1.2, 0.6])
    assert np.isnan(M.es_auc(0.8, [0.7]))
    assert np.isnan(M.es_auc([0.8, 0.6], [[0.7], [0.6]])).all()


def test_unweighted_calls_return_floats_and_name_the_bad_labels():
    y, s, p = [0, 1, 1, 0], [0.1, 0.8, 0.6, 0.3], [0, 1, 0, 0]
    for value in (M.prevalence(y), M.ppv(y, p), M.ece(y, s), M.brier(y, s), M.tpr(y, p), M.auroc(y, s)):
        assert isinstance(value, float)
    for fn, args, name in ((M.prevalence, ([0, 2],), "y_true"), (M.ppv, ([0, 2], [0, 1]), "y_pred"),
                           (M.ece, ([0, 2], [0.1, 0.2]), "y_score")):
        with pytest.raises(ValueError) as err:
            fn(*args)
        assert str(err.value) == f"y_true must hold only 0 and 1 for {name}, got values [2.0]"


def test_macro_f1_counts_a_class_seen_once():
    # class 2 is true once and never predicted: F1 0, and it enters the mean -> (2/3 + 1 + 0) / 3
    cm = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
    assert M.macro_f1_from_confusion(cm) == pytest.approx([5 / 9])


def test_gaps_over_one_group_are_nan_floats():
    for fn in (M.group_difference, M.group_ratio, M.group_min):
        value = fn([0.4])
        assert isinstance(value, float) and np.isnan(value)
