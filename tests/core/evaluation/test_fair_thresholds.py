"""Operating-point rules and recalibration, fitted on validation only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from mmfair.core.errors import ConfigError
from mmfair.core.evaluation.thresholds import check_rule, choose_threshold, fit_recalibrator


def _val(seed=0, n=400):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    s = 1 / (1 + np.exp(-(1.5 * (y - 0.2) + rng.normal(0, 1, n))))
    return y, np.round(s, 3)


def _rates(y, s, t):
    p = s >= t
    return p[y == 1].mean(), 1 - p[y == 0].mean()


@pytest.mark.parametrize("seed", [0, 1])
def test_sensitivity_rule_is_the_highest_threshold_reaching_the_target(seed):
    y, s = _val(seed)
    t = choose_threshold(y, s, "val-sens-0.8")
    sens, _ = _rates(y, s, t)
    assert sens >= 0.8
    higher = np.unique(s[s > t])
    assert all(_rates(y, s, u)[0] < 0.8 for u in higher)


@pytest.mark.parametrize("seed", [0, 1])
def test_specificity_rule_is_the_lowest_threshold_keeping_the_target(seed):
    y, s = _val(seed)
    t = choose_threshold(y, s, "val-spec-0.8")
    _, spec = _rates(y, s, t)
    assert spec >= 0.8
    lower = np.unique(s[s < t])
    assert all(_rates(y, s, u)[1] < 0.8 for u in lower)
    assert choose_threshold(y, s, "val-spec-0.9") >= t


def test_prevalence_rule_flags_as_many_as_are_positive():
    y, s = _val(2)
    s = s + np.arange(s.size) * 1e-7  # no ties
    t = choose_threshold(y, s, "val-prevalence")
    assert (s >= t).sum() == y.sum()


def test_youden_matches_roc_curve():
    y, s = _val(3)
    fpr, tpr, thr = roc_curve(y, s)
    j = np.argmax(tpr - fpr)
    assert choose_threshold(y, s, "val-youden") == pytest.approx(min(thr[j], 1.0))


@pytest.mark.parametrize("rule", ["val-youden", "val-sens-0.8", "val-spec-0.8", "val-prevalence"])
def test_data_rules_undefined_on_one_class(rule):
    assert np.isnan(choose_threshold(np.zeros(5), np.linspace(0, 1, 5), rule))


def test_numbers_and_unknown_rules():
    assert choose_threshold([0, 1], [0.2, 0.9], "0.5") == 0.5
    assert choose_threshold([0, 0], [0.2, 0.9], "0.3") == 0.3  # a fixed threshold needs no classes
    for bad in ("youden", "val-sens-1.5", "1.2", "0"):
        with pytest.raises(ConfigError):
            check_rule(bad)


def test_nan_scores_ignored():
    y, s = _val(4)
    s2 = s.astype(float).copy()
    s2[:10] = np.nan
    assert choose_threshold(y, s2, "val-sens-0.8") == choose_threshold(y[10:], s[10:], "val-sens-0.8")


def test_platt_matches_logistic_regression_on_the_logit_and_keeps_order():
    from sklearn.linear_model import LogisticRegression

    y, s = _val(5)
    f = fit_recalibrator(y, s, "platt")
    z = np.log(np.clip(s, 1e-6, 1 - 1e-6) / (1 - np.clip(s, 1e-6, 1 - 1e-6)))
    ref = LogisticRegression(C=1e6, max_iter=1000).fit(z[:, None], y).predict_proba(z[:, None])[:, 1]
    out = f(s)
    assert out == pytest.approx(ref)
    order = np.argsort(s, kind="mergesort")
    assert np.all(np.diff(out[order]) >= -1e-12)
    assert np.isnan(f(np.array([np.nan, 0.5]))[0])


def test_isotonic_is_clipped_and_identity_for_none():
    y, s = _val(6)
    f = fit_recalibrator(y, s, "isotonic")
    out = f(np.array([-1.0, 0.5, 2.0]))
    assert 0 <= out.min() and out.max() <= 1
    assert fit_recalibrator(y, s, "none")(s) is not None
    with pytest.raises(ConfigError):
        fit_recalibrator(y, s, "beta")
    with pytest.raises(ValueError, match="both classes"):
        fit_recalibrator(np.zeros(5), np.linspace(0, 1, 5), "platt")
