"""paired_difference with a permutation p-value next to its paired bootstrap interval."""

import numpy as np
import pytest

from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.stats import paired_difference


def test_paired_difference_permutation_p_value():
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(200), 2)
    y = (rng.random(400) < 0.3).astype(int)
    strong = y + rng.normal(0, 0.7, 400)
    weak = y + rng.normal(0, 2.0, 400)
    res = paired_difference(y, strong, weak, subjects, n_boot=200, n_perm=199, seed=1)
    assert res.value > 0 and res.ci.low > 0 and res.p_value < 0.01
    assert np.isnan(paired_difference(y, strong, weak, subjects, n_boot=0).p_value)
    same = paired_difference(y, strong, strong[::-1].copy(), subjects, n_boot=0, n_perm=99)
    assert 0 < same.p_value <= 1
    s = 1 / (1 + np.exp(-strong))
    w = 1 / (1 + np.exp(-weak))
    brier = paired_difference(y, s, w, subjects, metric=M.brier, n_boot=0, n_perm=49)
    assert brier.value == pytest.approx(np.mean((s - y) ** 2) - np.mean((w - y) ** 2))
    assert brier.p_value == pytest.approx(0.02)  # 1 / (1 + 49): no permutation as extreme


def _h0_pair(seed: int, n: int = 200):
    """Two models of the same quality (independent noise); b's scores squashed into [0, 0.01]."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    a = 1 / (1 + np.exp(-(y + rng.normal(0, 1, n))))
    other = 1 / (1 + np.exp(-(y + rng.normal(0, 1, n))))
    b = 0.01 * (other - other.min()) / (other.max() - other.min())
    return y, a, b


def test_auroc_permutation_swaps_ranks_so_a_squashed_model_keeps_the_level():
    # issue 11: an explicit AUROC statistic used to switch the rank transform off, so swapped raw scores of
    # a calibrated and a squashed model mixed scales (measured: 0 rejections in 200 seeds instead of ~10)
    rejected = 0
    for seed in range(200):
        y, a, b = _h0_pair(seed)
        rejected += paired_difference(y, a, b, np.arange(y.size), n_boot=0, n_perm=200, seed=seed).p_value < 0.05
    assert 0.01 <= rejected / 200 <= 0.10  # measured 0.04
    # invariant to a monotone rescaling of either model
    y, a, b = _h0_pair(7)
    p1 = paired_difference(y, a, b, np.arange(y.size), n_boot=0, n_perm=99, seed=1).p_value
    p2 = paired_difference(y, a, 100 * b + 3, np.arange(y.size), n_boot=0, n_perm=99, seed=1).p_value
    assert p1 == p2
