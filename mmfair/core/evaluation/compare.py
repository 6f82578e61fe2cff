"""Paired comparison of two methods scored on the same stays, with the one patient-level bootstrap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mmfair.core.evaluation.bootstrap import BootstrapCI, PatientBootstrap
from mmfair.core.evaluation.metrics import auroc

_MISMATCH = "paired comparison needs one label, two scores and one subject per stay; got lengths {0}"


@dataclass(frozen=True)
class PairedDifference:
    """``metric(a) − metric(b)`` on the same stays, with a paired percentile CI."""

    value: float
    value_a: float
    value_b: float
    ci: BootstrapCI
    n: int
    n_pos: int
    p_value: float = float("nan")  #: two-sided paired permutation p-value (``n_perm > 0``), else NaN


def paired_arrays(y_true, score_a, score_b, subject_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aligned 1-d arrays of two methods' outputs on the same stays, stays missing either output dropped."""
    y = np.asarray(y_true, dtype=float).ravel()
    a = np.asarray(score_a, dtype=float).ravel()
    b = np.asarray(score_b, dtype=float).ravel()
    subjects = np.asarray(subject_ids).ravel()
    if not (y.size == a.size == b.size == subjects.size):
        raise ValueError(_MISMATCH.format((y.size, a.size, b.size, subjects.size)))
    keep = np.isfinite(y) & np.isfinite(a) & np.isfinite(b)
    return y[keep], a[keep], b[keep], subjects[keep]


def paired_difference(
    y_true,
    score_a,
    score_b,
    subject_ids,
    *,
    metric: Callable = auroc,
    n_boot: int = 1000,
    seed: int = 0,
    n_perm: int = 0,
) -> PairedDifference:
    """Difference of a metric between two methods, bootstrapped by patient with the *same* replicates.

    Both methods are evaluated on every replicate's resample, so the interval is that of the paired
    difference (the correlation between the two methods' errors is kept), not of two independent CIs.
    Stays where either score is missing are left out of both. With ``n_perm > 0`` a paired permutation test
    (:func:`mmfair.core.evaluation.stats.paired_permutation_test`, method labels swapped per patient) adds a
    two-sided p-value.

    Examples
    --------
    >>> y = np.array([0, 0, 1, 1]); a = np.array([.1, .2, .8, .9]); b = np.array([.9, .2, .1, .8])
    >>> round(paired_difference(y, a, b, [1, 2, 3, 4], n_boot=0).value, 3)
    0.75
    """
    y, a, b, subjects = paired_arrays(y_true, score_a, score_b, subject_ids)
    value_a, value_b = float(metric(y, a)), float(metric(y, b))
    boot = PatientBootstrap(subjects, n_boot, seed)
    if n_boot:
        diffs = metric(y, a, weights=boot.weights) - metric(y, b, weights=boot.weights)
    else:
        diffs = np.array([])
    p_value = float("nan")
    if n_perm:
        from mmfair.core.evaluation import stats

        if metric is auroc:
            statistic = stats.auroc_rows
        else:

            def statistic(yy, xx):
                return np.array([metric(yy, row) for row in xx])

        p_value = stats.paired_permutation_test(y, a, b, subjects, statistic=statistic, n_perm=n_perm, seed=seed).p_value
    return PairedDifference(
        p_value=p_value,
        value=value_a - value_b,
        value_a=value_a,
        value_b=value_b,
        ci=boot.ci(diffs),
        n=int(y.size),
        n_pos=int(y.sum()),
    )
