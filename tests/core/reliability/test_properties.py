"""Property-based tests (hypothesis, derandomized: the same examples on every run) for the option parsers and
the metric functions' edge cases: one class, an empty group, NaN scores (issue 16)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sklearn.metrics import average_precision_score, roc_auc_score

from mmfair.cli.train import _key_values
from mmfair.core.config import EvalMissingConfig
from mmfair.core.errors import ConfigError
from mmfair.core.evaluation import metrics
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.thresholds import check_rule, choose_threshold

SETTINGS = settings(derandomize=True, database=None, max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

levels = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters=" _/-*"),
                 min_size=1, max_size=12).map(str.strip).filter(bool)
unit_rates = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


# ---- option parsers ----------------------------------------------------------------------------------
@SETTINGS
@given(st.dictionaries(levels, unit_rates, min_size=1, max_size=5))
def test_rates_profiles_round_trip(profile):
    text = ",".join(f"{level}={rate!r}" for level, rate in profile.items())
    config = EvalMissingConfig(mechanism="label", level_rates=[text])
    assert config.level_rates == (profile,)


@SETTINGS
@given(levels, st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0 + 1e-9), st.just(float("nan"))))
def test_a_rate_outside_the_unit_interval_is_refused_and_shown(level, rate):
    with pytest.raises(ValidationError) as info:
        EvalMissingConfig(mechanism="label", level_rates=[f"{level}={rate!r}"])
    shown = "nan" if math.isnan(rate) else repr(rate)
    assert f"got [{shown}]" in str(info.value)


scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                    st.text(alphabet="abcxyz_-", min_size=1, max_size=8))
keys = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)


@SETTINGS
@given(st.dictionaries(keys, scalars, min_size=1, max_size=5))
def test_key_value_params_read_each_value_as_its_yaml_scalar(params):
    pairs = [f"{k}={yaml.safe_dump(v, default_flow_style=True).removesuffix(chr(10)).removesuffix('...').strip()}"
             for k, v in params.items()]
    assert _key_values(pairs, "--fusion-param") == params


@SETTINGS
@given(st.text(alphabet="abc =", max_size=8).filter(lambda s: "=" not in s or not s.partition("=")[0].strip()))
def test_a_pair_without_a_key_is_refused(pair):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        _key_values([pair], "--fusion-param")


@SETTINGS
@given(st.floats(min_value=1e-6, max_value=1 - 1e-6))
def test_threshold_rules_accept_targets_and_numbers_inside_zero_one(x):
    text = f"{x:.6f}"
    assert check_rule(text) == text
    assert check_rule(f"val-sens-{text}") == f"val-sens-{text}"


@SETTINGS
@given(st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0)).filter(lambda v: not math.isnan(v)))
def test_numeric_thresholds_outside_zero_one_are_refused(x):
    with pytest.raises(ConfigError):
        check_rule(repr(x))


# ---- metrics -----------------------------------------------------------------------------------------
def labelled(min_size: int = 2):
    """(labels, scores) with both classes present."""
    return st.integers(min_size, 30).flatmap(lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
        st.lists(st.floats(0.0, 1.0, allow_nan=False).map(lambda v: round(v, 2)), min_size=n, max_size=n)))


@SETTINGS
@given(labelled())
def test_auroc_and_auprc_equal_scikit_learn(data):
    y, s = map(np.asarray, data)
    assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert metrics.auprc(y, s) == pytest.approx(average_precision_score(y, s))
    assert metrics.auroc_auprc(y, s) == pytest.approx((metrics.auroc(y, s), metrics.auprc(y, s)))


@SETTINGS
@given(st.integers(0, 1), st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=0, max_size=20))
def test_one_class_or_no_stay_is_undefined_never_zero(label, scores):
    y = np.full(len(scores), label)
    assert math.isnan(metrics.auroc(y, scores)) and math.isnan(metrics.auprc(y, scores))
    assert math.isnan(metrics.tpr(y, np.ones(len(y)))) == (label == 0 or not scores)
    assert math.isnan(metrics.fpr(y, np.ones(len(y)))) == (label == 1 or not scores)


@SETTINGS
@given(labelled(), st.integers(1, 5))
def test_weights_of_a_replicate_equal_repeating_its_stays(data, repeat):
    y, s = map(np.asarray, data)
    w = np.ones(len(y))
    w[0] = repeat
    expanded_y, expanded_s = np.repeat(y, w.astype(int)), np.repeat(s, w.astype(int))
    assert metrics.auroc(y, s, w[None, :])[0] == pytest.approx(metrics.auroc(expanded_y, expanded_s))
    assert metrics.brier(y, s, w[None, :])[0] == pytest.approx(metrics.brier(expanded_y, expanded_s))


@SETTINGS
@given(labelled(), st.integers(1, 5))
def test_nan_scores_do_not_move_a_validation_threshold(data, n_nan):
    y, s = map(np.asarray, data)
    y_more = np.concatenate([y, np.ones(n_nan, dtype=int)])
    s_more = np.concatenate([s, np.full(n_nan, np.nan)])
    for rule in ("val-youden", "val-sens-0.8", "val-spec-0.8", "val-prevalence"):
        assert choose_threshold(y_more, s_more, rule) == choose_threshold(y, s, rule)


@SETTINGS
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), max_size=6))
def test_group_gaps_of_no_group_or_an_undefined_group_are_undefined(values):
    assert math.isnan(metrics.group_difference(np.asarray([]))) and math.isnan(metrics.group_min(np.asarray([])))
    with_undefined = np.asarray([*values, np.nan])
    assert math.isnan(metrics.group_min(with_undefined))
    if len(values) >= 2:
        assert metrics.group_difference(np.asarray(values)) == pytest.approx(max(values) - min(values))
    else:  # one group: no gap to speak of
        assert math.isnan(metrics.group_difference(np.asarray(values)))


@SETTINGS
@given(st.lists(st.integers(0, 6), min_size=1, max_size=25), st.integers(0, 50), st.integers(0, 2**31))
def test_bootstrap_draws_each_replicate_n_subjects_with_stays_together(subjects, n_boot, seed):
    boot = PatientBootstrap(subjects, n_boot=n_boot, seed=seed)
    n_subjects = len(set(subjects))
    assert boot.weights.shape == (n_boot, len(subjects))
    per_subject = {s: boot.weights[:, i] for i, s in enumerate(subjects)}
    for i, s in enumerate(subjects):
        np.testing.assert_array_equal(boot.weights[:, i], per_subject[s])
    firsts = [subjects.index(s) for s in sorted(set(subjects))]
    np.testing.assert_array_equal(boot.weights[:, firsts].sum(axis=1), np.full(n_boot, n_subjects))


def test_specificity_rule_on_tied_scores_flags_nobody_instead_of_crashing():
    # found by test_nan_scores_do_not_move_a_validation_threshold: every finite threshold has specificity 0
    assert choose_threshold(np.array([0, 1]), np.array([0.0, 0.0]), "val-spec-0.8") == 1.0
