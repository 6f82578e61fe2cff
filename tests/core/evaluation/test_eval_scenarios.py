"""The label-stratified MCAR removal."""

import numpy as np
import pytest

from mmfair.core.evaluation.scenarios import draw_seed, n_to_remove, stratified_removal
from mmfair.core.registry import SCENARIOS


@pytest.fixture
def stays():
    rng = np.random.default_rng(0)
    present = rng.random(503) < 0.6
    label = (rng.random(503) < 0.3).astype(int)
    return present, label


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.2, 0.5, 0.77, 1.0])
def test_exact_share_only_among_present_and_stratified(stays, rate):
    present, label = stays
    keep = stratified_removal(present, label, rate, seed=11)
    removed = present & ~keep
    assert removed.sum() == n_to_remove(rate, present.sum())
    assert keep[~present].all()  # stays without the modality are never "removed"
    for value in (0, 1):
        stratum = present & (label == value)
        got = removed[stratum].sum()
        assert np.floor(rate * stratum.sum()) <= got <= np.ceil(rate * stratum.sum())


def test_reproducible_and_seed_dependent(stays):
    present, label = stays
    a = stratified_removal(present, label, 0.3, draw_seed(0, 0.3, 0))
    b = stratified_removal(present, label, 0.3, draw_seed(0, 0.3, 0))
    c = stratified_removal(present, label, 0.3, draw_seed(0, 0.3, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert draw_seed(0, 0.3, 0) != draw_seed(1, 0.3, 0) != draw_seed(0, 0.5, 0)


def test_round_half_up():
    assert n_to_remove(0.5, 5) == 3
    assert n_to_remove(0.2, 12) == 2


def test_bad_rate():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stratified_removal([True], [0], 1.5, 0)


def test_registered():
    assert "mcar" in SCENARIOS
