"""Metric definitions, on one sample or on many bootstrap replicates at once.

Every function takes ``y_true`` (0/1), the scores or hard predictions, and optional ``weights``:

* ``weights=None`` scores the sample as it is and returns a ``float``;
* ``weights`` of shape ``[B, n]`` (how many times each row is drawn in each of B bootstrap replicates,
  see :mod:`mmfair.core.evaluation.bootstrap`) returns an array of ``B`` values, computed for all
  replicates at once. A weight of ``k`` is exactly the same as repeating the row ``k`` times, so each
  replicate's value equals scikit-learn's on the expanded sample.

NaN policy
----------
A metric that is undefined on a sample returns NaN, never 0 and never a warning: AUROC and AUPRC need
both classes, TPR needs a positive, FPR a negative, rates need at least one row. Callers turn NaN into
``defined=false`` in the tidy table.

Scores are sorted once per call, not once per replicate: ties share one threshold (mid-rank rule for
AUROC, one precision–recall point for AUPRC), which is what scikit-learn does.
"""

from __future__ import annotations

import numpy as np

_SHAPE_MISMATCH = "y_true has {0} rows but {1} has {2}"
_WEIGHTS_SHAPE = "weights must have shape [B, {0}] (one column per row), got {1}"
_NOT_BINARY = "y_true must hold only 0 and 1 for {0}, got values {1}"


def _prepare(y_true, other, name: str, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    y = np.asarray(y_true, dtype=float).ravel()
    x = np.asarray(other, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(_SHAPE_MISMATCH.format(y.size, name, x.size))
    bad = np.setdiff1d(np.unique(y), [0.0, 1.0])
    if bad.size:
        raise ValueError(_NOT_BINARY.format(name, bad[:5].tolist()))
    scalar = weights is None
    if weights is None:
        w = np.ones((1, y.size))
    else:
        w = np.asarray(weights, dtype=float)
        if w.ndim == 1:
            w = w[None, :]
        if w.ndim != 2 or w.shape[1] != y.size:
            raise ValueError(_WEIGHTS_SHAPE.format(y.size, w.shape))
    return y, x, w, scalar


def _out(values: np.ndarray, scalar: bool):
    return float(values[0]) if scalar else values


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _tie_starts(sorted_scores: np.ndarray) -> np.ndarray:
    if sorted_scores.size == 0:
        return np.zeros(0, dtype=int)
    change = np.empty(sorted_scores.size, dtype=bool)
    change[0] = True
    change[1:] = sorted_scores[1:] != sorted_scores[:-1]
    return np.flatnonzero(change)


def _grouped_counts(y: np.ndarray, s: np.ndarray, w: np.ndarray, descending: bool):
    """Weighted positives and negatives per distinct score, in score order: two ``[B, G]`` arrays."""
    order = np.argsort(-s if descending else s, kind="mergesort")
    ys, ss, ws = y[order], s[order], w[:, order]
    starts = _tie_starts(ss)
    pos = np.add.reduceat(ws * ys, starts, axis=1)
    neg = np.add.reduceat(ws, starts, axis=1) - pos  # weights are integer counts: exact
    return pos, neg


def _auroc_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC from ascending-score grouped counts."""
    neg_below = np.cumsum(neg, axis=1) - neg
    u = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return _ratio(u, pos.sum(axis=1) * neg.sum(axis=1))


def _auprc_from_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision from descending-score grouped counts."""
    tp = np.cumsum(pos, axis=1)
    fp = np.cumsum(neg, axis=1)
    denom = tp + fp
    precision = np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    ap = _ratio((pos * precision).sum(axis=1), n_pos)
    ap[n_neg == 0] = np.nan
    return ap


def auroc_auprc(y_true, y_score, weights=None):
    """``(auroc, auprc)`` from one sort of the scores (the bootstrap's hot path); same values as the two
    functions called separately."""
    y, s, w, scalar = _prepare(y_true, y_score, "y_score", weights)
    if y.size == 0:
        nan = np.full(w.shape[0], np.nan)
        return _out(nan, scalar), _out(nan.copy(), scalar)
    pos, neg = _grouped_counts(y, s, w, descending=False)
    a = _auroc_from_counts(pos, neg)
    p = _auprc_from_counts(pos[:, ::-1], neg[:, ::-1])
    return _out(a, scalar), _out(p, scalar)


def auroc(y_true, y_score, weights=None):
    """Area under the ROC curve (Mann–Whitney U with mid-ranks for ties).

    .. math:: \\mathrm{AUROC} = \\frac{\\sum_{i: y_i=1} \\sum_{j: y_j=0} w_i w_j
              \\left([s_i > s_j] + \\tfrac12 [s_i = s_j]\\right)}{W_+ W_-}

    Parameters
    ----------
    y_true : array-like of shape (n,), 0/1
    y_score : array-like of shape (n,), probabilities or any monotone score (no NaN)
    weights : None or array of shape (B, n)

    Returns
    -------
    float or ndarray of shape (B,)
        NaN where a sample (replicate) holds one class only.
    """
    y, s, w, scalar = _prepare(y_true, y_score, "y_score", weights)
    if y.size == 0:
        return _out(np.full(w.shape[0], np.nan), scalar)
    pos, neg = _grouped_counts(y, s, w, descending=False)
    return _out(_auroc_from_counts(pos, neg), scalar)


def auprc(y_true, y_score, weights=None):
    """Area under the precision–recall curve, as average precision (scikit-learn's definition).

    .. math:: \\mathrm{AP} = \\sum_k (R_k - R_{k-1}) P_k

    over the distinct score thresholds taken from high to low, with no interpolation.

    Returns NaN where a sample (replicate) holds one class only: with no positive it is undefined, and
    with no negative it is trivially 1, which says nothing about the model.
    """
    y, s, w, scalar = _prepare(y_true, y_score, "y_score", weights)
    if y.size == 0:
        return _out(np.full(w.shape[0], np.nan), scalar)
    pos, neg = _grouped_counts(y, s, w, descending=True)
    return _out(_auprc_from_counts(pos, neg), scalar)


def brier(y_true, y_score, weights=None):
    """Brier score: the (weighted) mean of ``(score − y)²``; lower is better. NaN on an empty sample."""
    y, s, w, scalar = _prepare(y_true, y_score, "y_score", weights)
    return _out(_ratio(w @ ((s - y) ** 2), w.sum(axis=1)), scalar)


def prevalence(y_true, weights=None):
    """Share of positives, ``W+ / W``. NaN on an empty sample."""
    y, _, w, scalar = _prepare(y_true, y_true, "y_true", weights)
    return _out(_ratio(w @ y, w.sum(axis=1)), scalar)


def _check_hard(y_pred) -> None:
    bad = np.setdiff1d(np.unique(np.asarray(y_pred, dtype=float)), [0.0, 1.0])
    if bad.size:
        raise ValueError(
            "y_pred must be hard 0/1 predictions (threshold the scores first; a rate on probabilities "
            f"is silently wrong), got values {bad[:5].tolist()}"
        )


def tpr(y_true, y_pred, weights=None):
    """True positive rate (sensitivity) of hard 0/1 predictions: ``TP / (TP + FN)``. NaN with no positive."""
    _check_hard(y_pred)
    y, p, w, scalar = _prepare(y_true, y_pred, "y_pred", weights)
    return _out(_ratio(w @ (y * p), w @ y), scalar)


def fpr(y_true, y_pred, weights=None):
    """False positive rate of hard 0/1 predictions: ``FP / (FP + TN)``. NaN with no negative."""
    _check_hard(y_pred)
    y, p, w, scalar = _prepare(y_true, y_pred, "y_pred", weights)
    neg = 1.0 - y
    return _out(_ratio(w @ (neg * p), w @ neg), scalar)


def selection_rate(y_true, y_pred, weights=None):
    """Share predicted positive, ``(TP + FP) / n``, of hard 0/1 predictions. NaN on an empty sample."""
    _check_hard(y_pred)
    y, p, w, scalar = _prepare(y_true, y_pred, "y_pred", weights)
    return _out(_ratio(w @ p, w.sum(axis=1)), scalar)


# --- multiclass (length-of-stay classes) -----------------------------------------------------------


def confusion(y_true, y_pred, n_classes: int, weights=None) -> np.ndarray:
    """Weighted confusion matrices ``[B, K, K]`` (rows: true class, columns: predicted class)."""
    y = np.asarray(y_true, dtype=int).ravel()
    p = np.asarray(y_pred, dtype=int).ravel()
    if p.shape != y.shape:
        raise ValueError(_SHAPE_MISMATCH.format(y.size, "y_pred", p.size))
    w = np.ones((1, y.size)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    cell = y * n_classes + p
    onehot = np.zeros((y.size, n_classes * n_classes))
    onehot[np.arange(y.size), cell] = 1.0
    return (w @ onehot).reshape(w.shape[0], n_classes, n_classes)


def accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Share of rows on the diagonal. NaN on an empty sample."""
    return _ratio(np.trace(cm, axis1=1, axis2=2), cm.sum(axis=(1, 2)))


def kappa_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Cohen's (unweighted) kappa, ``(p_o − p_e) / (1 − p_e)``. NaN when ``p_e = 1`` or the sample is empty."""
    total = cm.sum(axis=(1, 2))
    po = _ratio(np.trace(cm, axis1=1, axis2=2), total)
    pe = _ratio((cm.sum(axis=2) * cm.sum(axis=1)).sum(axis=1), total**2)
    return _ratio(po - pe, 1.0 - pe)


def kappa_linear_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Cohen's kappa with linear weights ``w_ij = |i − j| / (K − 1)`` (the ordinal length-of-stay classes; the
    checkpoint criterion of training, scikit-learn's ``cohen_kappa_score(weights="linear")``):
    ``1 − Σ w·O / Σ w·E`` with ``E`` the outer product of the margins. NaN when ``Σ w·E = 0`` or empty."""
    k = cm.shape[-1]
    idx = np.arange(k)
    w = np.abs(idx[:, None] - idx[None, :]) / max(k - 1, 1)
    total = cm.sum(axis=(1, 2))
    outer = cm.sum(axis=2)[:, :, None] * cm.sum(axis=1)[:, None, :]
    expected = np.divide(outer, total[:, None, None], out=np.zeros_like(outer), where=total[:, None, None] > 0)
    return 1.0 - _ratio((w * cm).sum(axis=(1, 2)), (w * expected).sum(axis=(1, 2)))


def macro_f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Unweighted mean F1 over the classes that occur as truth or prediction (scikit-learn's label set
    for each replicate), a class's F1 being 0 where it has no true positive. NaN on an empty sample."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = denom > 0
    return _ratio((f1 * present).sum(axis=1), present.sum(axis=1).astype(float))


def ppv(y_true, y_pred, weights=None):
    """Positive predictive value (precision) of hard 0/1 predictions: ``TP / (TP + FP)``.

    NaN when nothing is predicted positive (scikit-learn would warn and return 0; 0 would read as a fact).
    """
    _check_hard(y_pred)
    y, p, w, scalar = _prepare(y_true, y_pred, "y_pred", weights)
    return _out(_ratio(w @ (y * p), w @ p), scalar)


#: Number of equal-width bins of :func:`ece`.
ECE_BINS = 10


def calibration_bins(y_score, n_bins: int = ECE_BINS) -> np.ndarray:
    """Bin index (0 … n_bins−1) of each score on ``n_bins`` equal-width bins of [0, 1].

    Bins are right-closed, ``[0, 0.1], (0.1, 0.2], …, (0.9, 1]``, exactly as
    :func:`sklearn.calibration.calibration_curve` (``strategy="uniform"``) assigns them: a score on an
    inner edge goes to the lower bin.
    """
    s = np.asarray(y_score, dtype=float).ravel()
    if s.size and (np.nanmin(s) < 0.0 or np.nanmax(s) > 1.0):
        raise ValueError("calibration needs probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], s, side="left")


def ece(y_true, y_score, weights=None, n_bins: int = ECE_BINS):
    """Expected calibration error on ``n_bins`` (default 10) equal-width bins of [0, 1]; lower is better.

    .. math:: \\mathrm{ECE} = \\sum_b \\frac{W_b}{W} \\left| \\bar y_b - \\bar s_b \\right|

    where ``ȳ_b`` is the (weighted) share of positives and ``s̄_b`` the mean score in bin ``b``; empty
    bins contribute nothing. Binning as :func:`calibration_bins` (scikit-learn's ``calibration_curve``).
    NaN on an empty sample.
    """
    y, s, w, scalar = _prepare(y_true, y_score, "y_score", weights)
    b = calibration_bins(s, n_bins)
    diff = np.zeros((y.size, n_bins))
    diff[np.arange(y.size), b] = y - s  # one column per bin: W_b·(ȳ_b − s̄_b) = Σ_{i in b} w_i (y_i − s_i)
    gap = np.abs(w @ diff)
    return _out(_ratio(gap.sum(axis=1), w.sum(axis=1)), scalar)


# --- gaps over groups -------------------------------------------------------------------------------
#
# The functions below take the per-group values as an array ``[..., G]`` (last axis: groups; a leading
# replicate axis is allowed) of the groups where the underlying metric is *defined* — the caller picks
# them. A NaN left in a row propagates to that row's result (a bootstrap replicate in which a used group
# lost a class is dropped, never scored as if that group were fair).


def _groups_last(values) -> tuple[np.ndarray, bool]:
    """The values as ``[..., G]`` and whether there are at least two groups."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 0:
        raise ValueError("per-group values need a last axis of groups")
    return v, v.shape[-1] >= 2


def _scalar_or_array(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


def group_difference(values):
    """``max − min`` over the groups (fairlearn's ``between_groups`` difference). NaN with fewer than two."""
    v, ok = _groups_last(values)
    if not ok:
        return _scalar_or_array(np.full(v.shape[:-1], np.nan))
    return _scalar_or_array(v.max(axis=-1) - v.min(axis=-1))


def group_ratio(values):
    """``min / max`` over the groups (fairlearn's ``between_groups`` ratio). NaN with fewer than two groups
    or a zero maximum (no group selected anybody: the ratio says nothing)."""
    v, ok = _groups_last(values)
    if not ok:
        return _scalar_or_array(np.full(v.shape[:-1], np.nan))
    hi, lo = np.atleast_1d(v.max(axis=-1)), np.atleast_1d(v.min(axis=-1))
    return _scalar_or_array(_ratio(lo, hi).reshape(v.shape[:-1]))


def group_min(values):
    """The worst (smallest) group value, over at least two groups (else NaN)."""
    v, ok = _groups_last(values)
    if not ok:
        return _scalar_or_array(np.full(v.shape[:-1], np.nan))
    return _scalar_or_array(v.min(axis=-1))


def equalized_odds(tpr_values, fpr_values, agg: str = "worst_case"):
    """Equalized-odds difference from per-group TPR and FPR (same groups): the larger (``worst_case``,
    fairlearn's default) or the mean (``mean``) of the TPR and FPR differences."""
    t, f = group_difference(tpr_values), group_difference(fpr_values)
    if agg == "worst_case":
        return _scalar_or_array(np.maximum(t, f))
    if agg == "mean":
        return _scalar_or_array((np.asarray(t) + np.asarray(f)) / 2.0)
    raise ValueError(f"agg must be 'worst_case' or 'mean', got {agg!r}")


def es_auc(overall_auroc, group_aurocs):
    """Equity-scaled AUROC (Harvard-GF, as MultiFair computes it): ``AUC / (1 + Σ_g |AUC − AUC_g|)``.

    ``overall_auroc`` has shape ``[...]`` (the AUROC of all evaluated stays) and ``group_aurocs``
    ``[..., G]`` (the groups with both classes). Equals the AUROC when every group has the overall
    AUROC and shrinks with any spread; higher is better. NaN with fewer than two groups.
    """
    g, ok = _groups_last(group_aurocs)
    a = np.asarray(overall_auroc, dtype=float)
    if not ok:
        return _scalar_or_array(np.full(a.shape, np.nan))
    return _scalar_or_array(a / (1.0 + np.abs(g - a[..., None]).sum(axis=-1)))
