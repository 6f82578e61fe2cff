"""Statistics across methods: paired permutation tests, multiplicity corrections, rank tests.

Two methods on the same test stays
----------------------------------
:func:`paired_permutation_test` tests ``H0: statistic(method a) = statistic(method b)`` for a statistic of
one method's per-stay outputs (AUROC of scores, a fairness gap of scores or hard predictions). Under H0
the two methods are exchangeable *within a patient*: each permutation swaps the outputs of ``a`` and
``b`` for all stays of a subject together, with probability ½ per subject. The p-value is two-sided,
``(1 + #{|T*| ≥ |T|}) / (1 + P)`` (never 0). Labels and groups never change under a swap, so a group
that has both classes keeps them in every permutation. All permutations are evaluated at once
(``[P, n]`` arrays, rank-based AUROC).

:func:`paired_difference` is ``metric(a) − metric(b)`` on the same stays with the paired patient-level bootstrap
interval (both methods scored on every replicate) and, on request, the permutation p-value.

:func:`group_difference_ci` is the signed difference of a metric between two groups of *one* method
with the patient-level bootstrap interval (a planted disparity gives an interval excluding 0; none gives
one covering 0 in about 95 % of samples). Max − min gaps are never negative, so "covers 0" only makes
sense for signed differences like this one or for differences of gaps between methods.

Many labels: :func:`holm` and :func:`benjamini_hochberg` adjust p-values (NaN kept as NaN).

Many methods over many blocks (task × label × attribute): :func:`mean_ranks`, :func:`friedman`,
:func:`nemenyi_cd` (critical difference of mean ranks) and :func:`wilcoxon_holm` (each method against a
reference, Holm-adjusted), gathered by :func:`compare_many`. Blocks from one model's labels are not
independent (phenotypes share a model): say so where these are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import BootstrapCI, PatientBootstrap

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (y [n], X [P, n]) -> [P]

_MISMATCH = "paired comparison needs one label, two scores and one subject per stay; got lengths {0}"



# --------------------------------------------------------------------------------- statistics on [P, n]


def _rank_invariant(fn: Statistic) -> Statistic:
    """Mark a statistic that depends on each method's ranking of the stays only (AUROC, group AUROC gaps):
    :func:`paired_permutation_test` swaps rank-normalised outputs for it."""
    fn.rank_invariant = True  # type: ignore[attr-defined]
    return fn


@_rank_invariant
def auroc_rows(y_true, scores) -> np.ndarray:
    """AUROC of each row of ``scores`` ``[P, n]`` against one ``y_true`` (mid-ranks for ties). NaN with one class."""
    y = np.asarray(y_true, dtype=float).ravel()
    x = np.atleast_2d(np.asarray(scores, dtype=float))
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return np.full(x.shape[0], np.nan)
    ranks = sps.rankdata(x, axis=1)
    u = ranks[:, pos].sum(axis=1) - n1 * (n1 + 1) / 2.0
    return u / (n1 * n0)


def _rate_rows(y, x, which: str) -> np.ndarray:
    if which == "tpr":
        m = y == 1
    elif which == "fpr":
        m = y == 0
    elif which == "selection_rate":
        m = np.ones(y.size, dtype=bool)
    else:
        raise ValueError(f"unknown rate {which!r}")
    if not m.any():
        return np.full(x.shape[0], np.nan)
    return x[:, m].mean(axis=1)


def group_gap_statistic(groups, metric: str = "auroc") -> Statistic:
    """``max − min`` over groups of ``metric`` (``auroc`` on scores; ``tpr``, ``fpr``, ``selection_rate`` on
    hard 0/1 predictions), over the groups where it is defined (AUROC: both classes; TPR: a positive; FPR: a
    negative) — as in :func:`~mmfair.core.evaluation.fair.evaluate_fairness`."""
    g = np.asarray(groups, dtype=object).ravel()
    names = list(pd.unique(g))

    def stat(y, x):
        y = np.asarray(y, dtype=float)
        x = np.atleast_2d(np.asarray(x, dtype=float))
        cols = []
        for k in names:
            m = g == k
            if metric == "auroc":
                v = auroc_rows(y[m], x[:, m])
            else:
                v = _rate_rows(y[m], x[:, m], metric)
            if np.all(np.isfinite(v)):
                cols.append(v)
        if len(cols) < 2:
            return np.full(x.shape[0], np.nan)
        vals = np.stack(cols, axis=1)
        return vals.max(axis=1) - vals.min(axis=1)

    # within-group AUROC depends on the within-group order only, which global ranks keep
    return _rank_invariant(stat) if metric == "auroc" else stat


# ---------------------------------------------------------------------- paired difference of two methods


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
    metric: Callable = M.auroc,
    n_boot: int = 1000,
    seed: int = 0,
    n_perm: int = 0,
) -> PairedDifference:
    """Difference of a metric between two methods, bootstrapped by patient with the *same* replicates.

    Both methods are evaluated on every replicate's resample, so the interval is that of the paired
    difference (the correlation between the two methods' errors is kept), not of two independent CIs.
    Stays where either score is missing are left out of both. With ``n_perm > 0`` a paired permutation test
    (:func:`paired_permutation_test`, method labels swapped per patient) adds a two-sided p-value.

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
        if metric is M.auroc:
            statistic = auroc_rows
        else:

            def statistic(yy, xx):
                return np.array([metric(yy, row) for row in xx])

        p_value = paired_permutation_test(y, a, b, subjects, statistic=statistic, n_perm=n_perm, seed=seed).p_value
    return PairedDifference(
        p_value=p_value,
        value=value_a - value_b,
        value_a=value_a,
        value_b=value_b,
        ci=boot.ci(diffs),
        n=int(y.size),
        n_pos=int(y.sum()),
    )


# ----------------------------------------------------------------------------- paired permutation test


@dataclass(frozen=True)
class PermutationResult:
    """``statistic(a) − statistic(b)``, its two-sided permutation p-value and the permutation count."""

    observed: float
    value_a: float
    value_b: float
    p_value: float
    n_perm: int
    n: int


def paired_permutation_test(
    y_true, out_a, out_b, subject_ids, *, statistic: Statistic | None = None, n_perm: int = 1000, seed: int = 0
) -> PermutationResult:
    """Paired permutation test of ``statistic(a) − statistic(b)`` on the same stays (see the module docstring).

    Parameters
    ----------
    y_true : (n,) 0/1 labels
    out_a, out_b : (n,) the two methods' outputs (scores, or hard predictions for a rate gap); stays where
        either is NaN are left out of both
    subject_ids : (n,) the unit of exchange: all stays of a subject are swapped together
    statistic : callable ``(y, X[P, n]) -> [P]``; default the AUROC
    n_perm : number of random permutations ``P``
    seed : seed of ``numpy.random.default_rng``

    For a rank-invariant statistic (the AUROC, :func:`auroc_rows`, and the AUROC gap of
    :func:`group_gap_statistic`; marked ``rank_invariant``) the two methods' outputs are first replaced by
    their normalised ranks (``rank / n``): AUROC depends on each method's ranking only, and swapping raw
    scores between methods on different scales (one calibrated, one squashed into [0, 0.01]) mixes
    incomparable numbers. The observed difference is unchanged; the null becomes invariant to monotone
    rescaling of either method. Other statistics (rates of hard predictions) swap the outputs as they are.

    Examples
    --------
    >>> y = np.array([0, 1] * 20); a = y * 0.6 + 0.2; b = np.full(40, 0.5)
    >>> paired_permutation_test(y, a, b, np.arange(40), n_perm=99).p_value
    0.01
    """
    statistic = statistic or auroc_rows
    rank_based = bool(getattr(statistic, "rank_invariant", False))
    y, a, b, subjects = paired_arrays(y_true, out_a, out_b, subject_ids)
    if rank_based and a.size:
        # AUROC depends on each method's ranking only; swapping raw scores between methods whose scales differ
        # (one calibrated, one not) mixes incomparable numbers and widens the null. Swapping each method's
        # normalised ranks keeps the observed difference and makes the test invariant to monotone rescaling.
        a, b = sps.rankdata(a) / a.size, sps.rankdata(b) / b.size
    va, vb = (float(v) for v in statistic(y, np.stack([a, b])))
    observed = va - vb
    _, codes = np.unique(subjects, return_inverse=True)
    rng = np.random.default_rng(seed)
    swap = rng.random((n_perm, codes.max() + 1 if codes.size else 0)) < 0.5
    swap = swap[:, codes]
    xa = np.where(swap, b, a)
    xb = np.where(swap, a, b)
    null = statistic(y, xa) - statistic(y, xb)
    if not np.isfinite(observed):
        p = float("nan")
    else:
        tol = 1e-12 * max(1.0, abs(observed))
        finite = null[np.isfinite(null)]
        p = float((1 + np.sum(np.abs(finite) >= abs(observed) - tol)) / (1 + finite.size))
    return PermutationResult(observed, va, vb, p, int(n_perm), int(y.size))


# -------------------------------------------------------------------------- signed group difference CI


@dataclass(frozen=True)
class GroupDifference:
    value: float
    ci: BootstrapCI


def group_difference_ci(
    y_true, output, groups, group_a, group_b, subject_ids, *, metric: str = "auroc", n_boot: int = 1000, seed: int = 0
) -> GroupDifference:
    """``metric(group_a) − metric(group_b)`` of one method with its patient-level bootstrap interval.

    ``metric`` is a function name of :mod:`.metrics` (``auroc``, ``auprc``, ``brier``, ``ece`` on scores;
    ``tpr``, ``fpr``, ``ppv``, ``selection_rate`` on hard predictions).
    """
    fn = getattr(M, metric)
    y = np.asarray(y_true, dtype=float).ravel()
    x = np.asarray(output, dtype=float).ravel()
    g = np.asarray(groups, dtype=object).ravel()
    ma, mb = g == group_a, g == group_b
    boot = PatientBootstrap(subject_ids, n_boot, seed)
    value = float(fn(y[ma], x[ma]) - fn(y[mb], x[mb]))
    reps = fn(y[ma], x[ma], boot.weights[:, ma]) - fn(y[mb], x[mb], boot.weights[:, mb]) if n_boot else np.empty(0)
    return GroupDifference(value, boot.ci(reps))


# ------------------------------------------------------------------------------------ multiplicity


def _sorted_finite(p_values: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The p-values, an all-NaN output of their shape, and the indices of the finite ones in ascending order."""
    p = np.asarray(p_values, dtype=float)
    ok = np.flatnonzero(np.isfinite(p))
    return p, np.full(p.shape, np.nan), ok[np.argsort(p[ok], kind="mergesort")]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error). NaN entries stay NaN and are not counted."""
    p, out, order = _sorted_finite(p_values)
    m = order.size
    if m == 0:
        return out
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false discovery rate). NaN entries stay NaN and are not counted."""
    p, out, order = _sorted_finite(p_values)
    m = order.size
    if m == 0:
        return out
    raw = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(raw[::-1])[::-1]
    out[order] = np.minimum(adj, 1.0)
    return out


# ------------------------------------------------------------------------------ many methods, blocks


def mean_ranks(table: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Mean rank of each method (columns) over the blocks (rows); rank 1 is best, ties share the mean rank.

    Blocks with any missing value are dropped (a rank needs every method).
    """
    t = table.dropna(axis=0, how="any")
    ranks = t.rank(axis=1, ascending=not higher_is_better, method="average")
    return ranks.mean(axis=0).sort_values()


def friedman(table: pd.DataFrame) -> tuple[float, float]:
    """Friedman's chi-square and p-value over complete blocks (rows) for the methods (columns)."""
    t = table.dropna(axis=0, how="any")
    if t.shape[1] < 3 or t.shape[0] < 2:
        raise ValueError("Friedman's test needs at least 3 methods and 2 complete blocks")
    res = sps.friedmanchisquare(*[t[c].to_numpy(dtype=float) for c in t.columns])
    return float(res.statistic), float(res.pvalue)


def nemenyi_cd(n_methods: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of mean ranks: ``q_α · sqrt(k (k + 1) / (6 N))``, ``q_α`` the studentized
    range quantile (infinite degrees of freedom) divided by √2 (Demšar 2006)."""
    if n_methods < 2 or n_blocks < 1:
        raise ValueError("the critical difference needs at least 2 methods and 1 block")
    q = sps.studentized_range.ppf(1 - alpha, n_methods, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(n_methods * (n_methods + 1) / (6.0 * n_blocks)))


def wilcoxon_holm(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Wilcoxon signed-rank test of each method against ``reference`` over complete blocks, Holm-adjusted.

    Returns one row per other method: ``method, n_blocks, median_difference`` (method − reference),
    ``statistic, p_value, p_holm``. A method identical to the reference on every block gets p = 1.
    """
    if reference not in table.columns:
        raise KeyError(f"reference method '{reference}' is not a column; columns are {list(table.columns)}")
    t = table.dropna(axis=0, how="any")
    out = []
    for method in [c for c in t.columns if c != reference]:
        d = t[method].to_numpy(dtype=float) - t[reference].to_numpy(dtype=float)
        if np.all(d == 0):
            stat, p = float("nan"), 1.0
        else:
            res = sps.wilcoxon(t[method].to_numpy(dtype=float), t[reference].to_numpy(dtype=float))
            stat, p = float(res.statistic), float(res.pvalue)
        out.append({"method": method, "n_blocks": int(d.size), "median_difference": float(np.median(d)),
                    "statistic": stat, "p_value": p})  # fmt: skip
    df = pd.DataFrame(out, columns=["method", "n_blocks", "median_difference", "statistic", "p_value"])
    df["p_holm"] = holm(df["p_value"].to_numpy()) if len(df) else []
    return df


@dataclass(frozen=True)
class ManyMethods:
    """Mean ranks, Friedman's test, the Nemenyi critical difference and Wilcoxon–Holm against a reference."""

    mean_ranks: pd.Series
    friedman_statistic: float
    friedman_p: float
    critical_difference: float
    n_blocks: int
    versus_reference: pd.DataFrame


def blocks_from_tidy(rows: pd.DataFrame, metric: str, block: Sequence[str] = ("task", "label", "attribute")) -> pd.DataFrame:
    """A blocks × methods table of one metric from tidy rows (defined values only; several runs are averaged)."""
    sel = rows[(rows["metric"] == metric) & rows["defined"].astype(bool)]
    return sel.pivot_table(index=list(block), columns="method", values="value", aggfunc="mean")


def compare_many(table: pd.DataFrame, *, higher_is_better: bool, reference: str, alpha: float = 0.05) -> ManyMethods:
    """All rank statistics of a blocks × methods table (complete blocks only)."""
    t = table.dropna(axis=0, how="any")
    stat, p = friedman(t)
    return ManyMethods(
        mean_ranks=mean_ranks(t, higher_is_better),
        friedman_statistic=stat,
        friedman_p=p,
        critical_difference=nemenyi_cd(t.shape[1], t.shape[0], alpha),
        n_blocks=int(t.shape[0]),
        versus_reference=wilcoxon_holm(t, reference),
    )


def adjust_p(p_values: Sequence[float], method: str = "holm") -> np.ndarray:
    """Adjusted p-values across a family (e.g. the labels of a phenotype run): ``holm`` or ``bh``."""
    if method == "holm":
        return holm(p_values)
    if method in ("bh", "fdr_bh", "benjamini-hochberg"):
        return benjamini_hochberg(p_values)
    raise ValueError(f"unknown adjustment {method!r}; use 'holm' or 'bh'")
