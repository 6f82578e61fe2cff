import numpy as np
from sklearn.metrics import roc_auc_score

from mmfair.core.evaluation.stats import paired_difference


def test_point_difference_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    a = y + rng.normal(0, 0.8, 300)
    b = y + rng.normal(0, 1.5, 300)
    res = paired_difference(y, a, b, np.arange(300), n_boot=0)
    assert np.isclose(res.value, roc_auc_score(y, a) - roc_auc_score(y, b))


def test_a_clearly_better_method_has_a_ci_above_zero_and_an_equal_one_covers_zero():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 600)
    subjects = np.arange(600) // 2
    strong = y + rng.normal(0, 0.6, 600)
    weak = y + rng.normal(0, 2.0, 600)
    better = paired_difference(y, strong, weak, subjects, n_boot=500, seed=0)
    assert better.ci.low > 0
    same = paired_difference(y, strong, strong + 1e-9 * rng.normal(size=600), subjects, n_boot=500, seed=0)
    assert same.ci.low <= 0 <= same.ci.high


def test_missing_scores_are_dropped_from_both():
    y = np.array([0, 1, 0, 1, 0, 1])
    a = np.array([0.1, 0.9, np.nan, 0.8, 0.2, 0.7])
    b = np.array([0.2, 0.6, 0.3, np.nan, 0.4, 0.5])
    res = paired_difference(y, a, b, np.arange(6), n_boot=10)
    assert res.n == 4
