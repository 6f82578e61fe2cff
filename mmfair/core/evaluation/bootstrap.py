"""The one patient-level bootstrap, vectorised.

A replicate resamples **subjects** with replacement (as many as there are subjects); every stay of a
drawn subject enters the replicate, as many times as the subject was drawn. The draws form an index
matrix ``subject_draws`` of shape ``[B, n_subjects]``; it is turned into a count matrix ``weights`` of
shape ``[B, n_stays]`` (a stay's count is its subject's count), and the metrics in
:mod:`mmfair.core.evaluation.metrics` evaluate all ``B`` replicates at once from it (rank-based AUROC,
average precision, weighted rates): no Python loop over replicates, no scikit-learn call per replicate.

Restricting a bootstrap to a subset of stays (a subgroup, the stays with a CXR, the stays a method
scored) is ``weights[:, mask]``: the same subject draws, so results on subsets and across runs that share
a test fold are *paired* (same seed → same replicates), which is what comparisons of methods need.

Confidence intervals are percentile intervals (2.5 %, 97.5 %). Replicates in which a statistic is
undefined (NaN, e.g. a subgroup drew no positive) are dropped and counted in :class:`BootstrapCI`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CI_QUANTILES = (2.5, 97.5)

_NEGATIVE_B = "the number of bootstrap replicates must be >= 0, got {0}"
_LENGTH = "replicate values must have one value per replicate ({0}), got {1}"


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile interval and how many replicates it rests on."""

    low: float
    high: float
    n_valid: int
    n_dropped: int


class PatientBootstrap:
    """Subject-level bootstrap replicates of one set of stays.

    Parameters
    ----------
    subject_ids : array-like of shape (n_stays,)
        The subject of each stay; stays of one subject are always drawn together.
    n_boot : int
        Number of replicates ``B`` (0 gives no replicates and NaN intervals).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed and subjects give the same replicates.

    Attributes
    ----------
    subject_draws : ndarray of shape (B, n_subjects)
        Index matrix: the subject codes drawn in each replicate.
    weights : ndarray of shape (B, n_stays)
        How many times each stay enters each replicate.
    """

    def __init__(self, subject_ids, n_boot: int, seed: int) -> None:
        if n_boot < 0:
            raise ValueError(_NEGATIVE_B.format(n_boot))
        subject_ids = np.asarray(subject_ids).ravel()
        self.subjects, self.codes = np.unique(subject_ids, return_inverse=True)
        self.n_boot = int(n_boot)
        n_subjects = self.subjects.size
        rng = np.random.default_rng(seed)
        self.subject_draws = rng.integers(0, max(n_subjects, 1), size=(self.n_boot, n_subjects))
        offsets = (np.arange(self.n_boot) * n_subjects)[:, None]
        counts = np.bincount((self.subject_draws + offsets).ravel(), minlength=self.n_boot * n_subjects)
        counts = counts.reshape(self.n_boot, n_subjects)
        self.weights = counts[:, self.codes].astype(float)

    def replicate_indices(self, b: int) -> np.ndarray:
        """Row indices of replicate ``b`` as an explicit resample (each stay repeated by its count)."""
        return np.repeat(np.arange(self.weights.shape[1]), self.weights[b].astype(int))

    def ci(self, replicate_values) -> BootstrapCI:
        """Percentile interval of a statistic's replicate values, NaN replicates dropped and counted."""
        return percentile_ci(replicate_values, self.n_boot)


def percentile_ci(replicate_values, n_boot: int | None = None) -> BootstrapCI:
    """The (2.5 %, 97.5 %) percentile interval of the finite replicate values (NaN when none is)."""
    values = np.asarray(replicate_values, dtype=float).ravel()
    if n_boot is not None and values.size != n_boot:
        raise ValueError(_LENGTH.format(n_boot, values.size))
    finite = values[np.isfinite(values)]
    dropped = int(values.size - finite.size)
    if finite.size == 0:
        return BootstrapCI(float("nan"), float("nan"), 0, dropped)
    low, high = np.percentile(finite, CI_QUANTILES)
    return BootstrapCI(float(low), float(high), int(finite.size), dropped)
