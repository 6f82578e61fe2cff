"""The vectorised patient-level bootstrap."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap, percentile_ci


@pytest.fixture
def sample():
    rng = np.random.default_rng(7)
    subjects = np.repeat(np.arange(120), rng.choice([1, 2, 3], size=120))
    n = subjects.size
    y = (rng.random(n) < 0.35).astype(int)
    s = np.round(0.25 * y + rng.random(n), 2)
    return subjects, y, s


def test_replicates_equal_sklearn_on_each_resample(sample):
    subjects, y, s = sample
    boot = PatientBootstrap(subjects, 50, seed=0)
    roc, ap = M.auroc(y, s, boot.weights), M.auprc(y, s, boot.weights)
    for b in range(5):
        idx = boot.replicate_indices(b)
        assert roc[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y[idx], s[idx]), abs=1e-12)


def test_patient_level_stays_drawn_together(sample):
    subjects, _, _ = sample
    boot = PatientBootstrap(subjects, 200, seed=1)
    assert boot.subject_draws.shape == (200, np.unique(subjects).size)
    for sid in np.unique(subjects)[:30]:
        cols = boot.weights[:, subjects == sid]
        assert (cols == cols[:, :1]).all()  # all stays of a subject share the count in every replicate
    # each replicate holds as many subject draws as there are subjects
    per_subject = np.array([boot.weights[:, np.flatnonzero(subjects == sid)[0]] for sid in np.unique(subjects)])
    assert (per_subject.sum(axis=0) == np.unique(subjects).size).all()


def test_seeded(sample):
    subjects, _, _ = sample
    a, b = PatientBootstrap(subjects, 20, seed=5), PatientBootstrap(subjects, 20, seed=5)
    c = PatientBootstrap(subjects, 20, seed=6)
    assert np.array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, c.weights)


def test_ci_drops_and_counts_undefined():
    values = np.array([0.1, 0.2, np.nan, 0.3, np.nan])
    ci = percentile_ci(values)
    assert ci.n_valid == 3 and ci.n_dropped == 2
    assert ci.low == pytest.approx(np.percentile([0.1, 0.2, 0.3], 2.5))
    empty = percentile_ci(np.full(4, np.nan))
    assert np.isnan(empty.low) and np.isnan(empty.high) and (empty.n_valid, empty.n_dropped) == (0, 4)


def test_zero_replicates(sample):
    subjects, y, s = sample
    boot = PatientBootstrap(subjects, 0, seed=0)
    assert boot.weights.shape == (0, y.size)
    assert np.isnan(boot.ci(np.empty(0)).low)


def test_weights_count_each_stays_subject_in_the_draws():
    # subjects sorted: 3 -> code 0, 5 -> code 1, 8 -> code 2; a column vector is flattened
    subjects = np.array([[5], [3], [5], [8]])
    boot = PatientBootstrap(subjects, 40, seed=3)
    assert boot.subjects.tolist() == [3, 5, 8] and boot.codes.tolist() == [1, 0, 1, 2]
    assert boot.n_boot == 40 and boot.subject_draws.shape == (40, 3)
    recount = np.array([[np.sum(row == code) for code in (1, 0, 1, 2)] for row in boot.subject_draws])
    assert boot.weights.dtype == np.float64
    assert np.array_equal(boot.weights, recount)
    for b in (0, 17, 39):
        expected = [stay for stay, code in enumerate((1, 0, 1, 2)) for _ in range(int(np.sum(boot.subject_draws[b] == code)))]
        assert boot.replicate_indices(b).tolist() == expected


def test_one_subject_is_drawn_every_time_and_no_subject_gives_empty_replicates():
    boot = PatientBootstrap(["a", "a"], 5, seed=0)
    assert boot.weights.tolist() == [[1.0, 1.0]] * 5
    empty = PatientBootstrap([], 3, seed=0)
    assert empty.weights.shape == (3, 0) and empty.subject_draws.shape == (3, 0)


def test_negative_replicates_refused_with_the_number():
    with pytest.raises(ValueError, match=r"^the number of bootstrap replicates must be >= 0, got -1$"):
        PatientBootstrap([1, 2], -1, seed=0)


def test_percentile_interval_by_hand():
    # 0, 1, ..., 100: the 2.5 % and 97.5 % points (linear interpolation) are 2.5 and 97.5
    ci = percentile_ci(np.arange(101.0))
    assert (ci.low, ci.high, ci.n_valid, ci.n_dropped) == (2.5, 97.5, 101, 0)
    assert isinstance(ci.low, float) and isinstance(ci.n_valid, int) and isinstance(ci.n_dropped, int)
    one = percentile_ci([np.nan, 0.4, np.inf])  # infinite values are dropped as undefined
    assert (one.low, one.high, one.n_valid, one.n_dropped) == (0.4, 0.4, 1, 2)


def test_interval_needs_one_value_per_replicate():
    boot = PatientBootstrap([1, 2, 3], 4, seed=0)
    with pytest.raises(ValueError, match=r"^replicate values must have one value per replicate \(4\), got 3$"):
        boot.ci([0.1, 0.2, 0.3])
    assert boot.ci([0.1, 0.2, np.nan, 0.3]).n_dropped == 1
    assert percentile_ci([0.1, 0.2, 0.3], n_boot=3).n_valid == 3
