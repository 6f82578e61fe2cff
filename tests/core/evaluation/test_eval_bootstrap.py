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
    assert np.isnan(empty.low) and empty.n_dropped == 4


def test_zero_replicates(sample):
    subjects, y, s = sample
    boot = PatientBootstrap(subjects, 0, seed=0)
    assert boot.weights.shape == (0, y.size)
    assert np.isnan(boot.ci(np.empty(0)).low)
