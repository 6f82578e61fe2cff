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
