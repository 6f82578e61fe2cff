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


# --- fit_recalibrator on inputs whose fit is known by hand ----------------------------------------------
#
# Platt on two distinct scores is saturated: the (nearly unpenalised) logistic fit reproduces each score's
# positive share. Scores 0.2 (1 positive of 4) and 0.8 (3 of 4) have logits -ln 4 and ln 4, so
# sigmoid(a·logit(s) + b) = 1/4 and 3/4 give a = ln 3 / ln 4, b = 0.

_PLATT_Y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
_PLATT_S = np.array([0.2] * 4 + [0.8] * 4)
_A = np.log(3) / np.log(4)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_platt_reproduces_the_positive_share_of_each_score_and_the_fitted_line_between():
    f = fit_recalibrator(_PLATT_Y, _PLATT_S, "platt")
    out = f(np.array([0.2, 0.8, 0.5, 0.9]))
    expected = [0.25, 0.75, 0.5, _sigmoid(_A * np.log(9.0))]  # logit(0.9) = ln 9
    assert out == pytest.approx(expected, abs=1e-4)
    assert out.dtype == np.float64


def test_platt_clips_scores_of_exactly_0_and_1_to_1e6_from_the_edge():
    f = fit_recalibrator(_PLATT_Y, _PLATT_S, "platt")
    edge = np.log((1 - 1e-6) / 1e-6)  # logit of the clipped score
    out = f([0.0, 1.0])  # a list is accepted
    assert np.all(np.isfinite(out))
    assert out == pytest.approx([_sigmoid(-_A * edge), _sigmoid(_A * edge)], rel=1e-3)


def test_platt_fit_ignores_rows_with_a_nan_score_or_label_and_maps_nan_to_nan():
    y = np.concatenate([_PLATT_Y, [1.0, np.nan, 0.0]])
    s = np.concatenate([_PLATT_S, [np.nan, 0.2, np.inf]])
    f = fit_recalibrator(y, s, "platt")
    out = f(np.array([0.2, np.nan, 0.8, np.inf]))
    assert out[[0, 2]] == pytest.approx([0.25, 0.75], abs=1e-4)
    assert np.isnan(out[[1, 3]]).all() and out.dtype == np.float64


# Isotonic on scores 0.1 < 0.2 < 0.3 < 0.4 with labels 0, 1, 0, 1: pooling the violating pair (1, 0) gives
# fitted values 0, 0.5, 0.5, 1; between scores the map interpolates linearly, outside it takes the end value.


def test_isotonic_pools_adjacent_violators_interpolates_and_clips_outside_the_range():
    f = fit_recalibrator([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], "isotonic")
    out = f(np.array([-1.0, 0.1, 0.15, 0.25, 0.4, 2.0, np.nan]))
    assert out[:6] == pytest.approx([0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
    assert np.isnan(out[6]) and out.dtype == np.float64


def test_isotonic_fit_ignores_rows_with_a_nan_score_or_label():
    f = fit_recalibrator([0, 1, 0, 1, 1, np.nan], [0.1, 0.2, 0.3, 0.4, np.nan, 0.05], "isotonic")
    assert f([0.05, 0.15, 0.25]) == pytest.approx([0.0, 0.25, 0.5])


def test_none_is_the_identity_as_floats():
    f = fit_recalibrator([0, 0], [0.3, 0.3], "none")  # needs neither classes nor a fit
    out = f([0, 0.25, 1])
    assert out.dtype == np.float64
    assert out.tolist() == [0.0, 0.25, 1.0]
    assert f([0, 1]).dtype == np.float64  # integer scores come back as floats


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_one_class_after_dropping_nan_rows_is_refused(method):
    with pytest.raises(ValueError, match="^recalibration needs both classes in the validation predictions$"):
        fit_recalibrator([0, 0, 1], [0.2, 0.4, np.nan], method)


def test_unknown_recalibration_names_the_method_and_the_choices():
    with pytest.raises(ConfigError, match=r"^unknown recalibration 'beta'\. Available: none, platt, isotonic$"):
        fit_recalibrator([0, 1], [0.2, 0.8], "beta")


# --- choose_threshold on four stays worked by hand -------------------------------------------------------
#
# Labels 0, 1, 0, 1 at scores 0.1, 0.2, 0.3, 0.4. Flagging score >= t:
#   t = 0.4: TPR 1/2, FPR 0   (J 1/2, specificity 1)
#   t = 0.3: TPR 1/2, FPR 1/2 (J 0,   specificity 1/2)
#   t = 0.2: TPR 1,   FPR 1/2 (J 1/2, specificity 1/2)
#   t = 0.1: TPR 1,   FPR 1   (J 0,   specificity 0)
# Every rate is a multiple of 1/2, so a target equal to a reached rate is met exactly (no rounding).

_Y4 = np.array([0, 1, 0, 1])
_S4 = np.array([0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("rule, expected", [
    ("val-youden", 0.4),  # J ties at 0.4 and 0.2: the highest
    ("val-sens-0.5", 0.4),  # reached exactly at 0.4
    ("val-sens-.6", 0.2),  # the leading 0 is optional
    ("val-spec-0.5", 0.2),  # kept exactly down to 0.2
    ("val-spec-0.6", 0.4),
    ("val-prevalence", 0.3),  # the 2nd highest score: 2 positives
    ("0.25", 0.25),
])
def test_rules_on_four_stays(rule, expected):
    assert choose_threshold(_Y4, _S4, rule) == expected
    assert choose_threshold(_Y4.tolist(), _S4.tolist(), rule) == expected  # lists are accepted


def test_a_nan_label_or_a_nan_score_drops_only_that_stay():
    y = np.array([0, 1, 0, 1, np.nan, 1, 0])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.9, np.nan, 0.95])
    assert choose_threshold(y[:6], s[:6], "val-prevalence") == 0.3
    # the negative at 0.95 stays: J is 1/6 at 0.4 and 1/3 at 0.2; specificity 2/3 at 0.4, 1/3 at 0.3
    assert choose_threshold(y, s, "val-youden") == 0.2
    assert choose_threshold(y, s, "val-spec-0.5") == 0.4


def test_nothing_scored_or_one_class_gives_nan():
    assert np.isnan(choose_threshold([], [], "val-youden"))
    assert np.isnan(choose_threshold([0, 1], [np.nan, np.nan], "val-sens-0.8"))
    assert np.isnan(choose_threshold([1, 1, np.nan], [0.2, 0.4, 0.5], "val-prevalence"))


def test_specificity_rule_with_every_score_tied_flags_nobody_at_1():
    # the only finite threshold (0.5) flags everyone (specificity 0): the answer is roc_curve's +inf, clipped
    assert choose_threshold([0, 1, 0, 1], [0.5] * 4, "val-spec-0.8") == 1.0


def test_thresholds_stay_in_0_1_for_scores_outside_it():
    y = [0, 1, 0, 1]
    assert choose_threshold(y, [-0.5, 1.5, -0.2, 2.0], "val-youden") == 1.0
    assert choose_threshold(y, [-0.5, 1.5, -0.2, 2.0], "val-sens-0.9") == 1.0
    assert choose_threshold(y, [-0.5, 1.5, -0.2, 2.0], "val-prevalence") == 1.0
    assert choose_threshold(y, [-0.5, -0.4, -0.2, -0.1], "val-spec-0.9") == 0.0
    assert choose_threshold(y, [-0.5, -0.4, -0.2, -0.1], "val-youden") == 0.0
    assert choose_threshold(y, [-0.5, -0.4, -0.2, -0.1], "val-sens-0.9") == 0.0
    assert choose_threshold(y, [-0.5, -0.4, -0.2, -0.1], "val-prevalence") == 0.0


@pytest.mark.parametrize("rule", ["val-youden", "val-prevalence", "val-sens-0.8", "val-spec-.25", "0.5", "1e-3"])
def test_check_rule_returns_a_valid_rule_unchanged(rule):
    assert check_rule(rule) == rule


@pytest.mark.parametrize("rule, message", [
    ("val-sens-0.0", "the target of 'val-sens-0.0' must lie in (0, 1)"),
    ("val-spec-.0", "the target of 'val-spec-.0' must lie in (0, 1)"),
    ("1.0", "a numeric threshold must lie in (0, 1), got 1.0"),
    ("0.0", "a numeric threshold must lie in (0, 1), got 0.0"),
    ("youden", "unknown threshold rule 'youden'. Available: val-youden, val-sens-0.8, val-spec-0.8, "
               "val-prevalence, 0.5, val-sens-X, val-spec-X or a number in (0, 1)"),
])
def test_check_rule_messages(rule, message):
    with pytest.raises(ConfigError) as err:
        check_rule(rule)
    assert str(err.value) == message
    with pytest.raises(ConfigError):
        choose_threshold(_Y4, _S4, rule)  # choose_threshold checks the rule first
