"""New per-group metrics and gap functions of :mod:`mmfair.core.evaluation.metrics`, checked against
scikit-learn / fairlearn computed independently, on one sample and on bootstrap replicates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    true_positive_rate,
)
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_score, roc_auc_score

from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = np.clip(np.round(1 / (1 + np.exp(-(1.4 * (y - 0.3) + rng.normal(0, 1, n)))), 2), 0, 1)
    g = rng.choice(["A", "B", "C"], size=n, p=[0.5, 0.3, 0.2])
    return y, s, g


def _ece_reference(y, s, n_bins=10):
    """ECE from sklearn's calibration_curve (uniform bins), weighted by bin counts counted with pandas."""
    prob_true, prob_pred = calibration_curve(y, s, n_bins=n_bins, strategy="uniform")
    bins = pd.Series(pd.cut(s, np.linspace(0, 1, n_bins + 1), right=True, include_lowest=True))
    counts = bins.value_counts(sort=False).sort_index()
    counts = counts[counts > 0].to_numpy()
    return float(np.sum(counts * np.abs(prob_true - prob_pred)) / counts.sum())


def test_ppv_matches_sklearn_and_is_nan_without_predicted_positives():
    y, s, _ = _data()
    hard = (s >= 0.5).astype(int)
    assert M.ppv(y, hard) == pytest.approx(precision_score(y, hard))
    assert np.isnan(M.ppv(y, np.zeros_like(y)))  # sklearn would warn and say 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_matches_calibration_curve(seed):
    y, s, _ = _data(seed)
    assert M.ece(y, s) == pytest.approx(_ece_reference(y, s))


def test_ece_bins_are_right_closed_like_sklearn():
    s = np.array([0.0, 0.1, 0.1000001, 0.2, 1.0])
    assert M.calibration_bins(s).tolist() == [0, 0, 1, 1, 9]
    y = np.array([0, 1, 0, 1, 1])
    assert M.ece(y, s) == pytest.approx(_ece_reference(y, s))


def test_ece_rejects_non_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        M.ece([0, 1], [0.2, 1.3])


def test_new_metrics_on_replicates_equal_the_expanded_sample():
    y, s, _ = _data(3, 120)
    subjects = np.repeat(np.arange(60), 2)
    boot = PatientBootstrap(subjects, 15, seed=4)
    hard = (s >= 0.4).astype(float)
    ppv_r, ece_r, brier_r = M.ppv(y, hard, boot.weights), M.ece(y, s, boot.weights), M.brier(y, s, boot.weights)
    for b in range(15):
        idx = boot.replicate_indices(b)
        assert ppv_r[b] == pytest.approx(precision_score(y[idx], hard[idx], zero_division=np.nan), nan_ok=True)
        assert ece_r[b] == pytest.approx(_ece_reference(y[idx], s[idx]))
        assert brier_r[b] == pytest.approx(np.mean((s[idx] - y[idx]) ** 2))


def test_gap_functions_match_fairlearn():
    y, s, g = _data(5)
    hard = (s >= 0.45).astype(int)
    frame = MetricFrame(metrics={"sr": M.selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate},
                        y_true=y, y_pred=hard, sensitive_features=g)  # fmt: skip
    bg = frame.by_group
    assert M.group_difference(bg["sr"].to_numpy()) == pytest.approx(demographic_parity_difference(y, hard, sensitive_features=g))
    assert M.group_ratio(bg["sr"].to_numpy()) == pytest.approx(demographic_parity_ratio(y, hard, sensitive_features=g))
    tp, fp = bg["tpr"].to_numpy(), bg["fpr"].to_numpy()
    assert M.equalized_odds(tp, fp) == pytest.approx(equalized_odds_difference(y, hard, sensitive_features=g))
    assert M.equalized_odds(tp, fp, "mean") == pytest.approx(
        equalized_odds_difference(y, hard, sensitive_features=g, agg="mean"))
    with pytest.raises(ValueError, match="agg"):
        M.equalized_odds(tp, fp, "median")


def test_gap_functions_need_two_groups_and_propagate_nan_per_replicate():
    assert np.isnan(M.group_difference([0.3]))
    assert np.isnan(M.group_ratio([0.0, 0.0]))  # nobody selected anywhere: the ratio says nothing
    assert np.isnan(M.group_min([0.7]))
    assert np.isnan(M.es_auc(0.8, [0.8]))
    reps = np.array([[0.2, 0.5], [np.nan, 0.4]])
    out = M.group_difference(reps)
    assert out[0] == pytest.approx(0.3) and np.isnan(out[1])


def test_es_auc_definition():
    y, s, g = _data(6)
    auc = roc_auc_score(y, s)
    aucs = np.array([roc_auc_score(y[g == k], s[g == k]) for k in ("A", "B", "C")])
    assert M.es_auc(auc, aucs) == pytest.approx(auc / (1 + np.abs(aucs - auc).sum()))
    assert M.es_auc(0.8, [0.8, 0.8]) == pytest.approx(0.8)  # no spread: the AUROC itself
    both = M.es_auc(np.array([auc, auc]), np.stack([aucs, aucs]))
    assert both.shape == (2,) and both[0] == pytest.approx(M.es_auc(auc, aucs))
