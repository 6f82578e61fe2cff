"""Operating points, always chosen on validation predictions (never on test)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from mmfair.core.errors import ConfigError

THRESHOLD_RULES = ("val-youden", "0.5")


def choose_threshold(y_true: np.ndarray, score: np.ndarray, rule: str) -> float:
    """The threshold a rule picks on *validation* labels and probabilities.

    ``val-youden`` maximises TPR − FPR (ties: the highest threshold); ``0.5`` or any number in (0, 1) is
    taken as given. NaN scores (stays a method cannot score) are ignored. Returns NaN when the rule is
    undefined on these labels (a single class), never a silent default.
    """
    y_true = np.asarray(y_true, dtype=float)
    score = np.asarray(score, dtype=float)
    keep = ~(np.isnan(y_true) | np.isnan(score))
    y_true, score = y_true[keep], score[keep]
    if rule == "val-youden":
        if y_true.size == 0 or np.unique(y_true).size < 2:
            return float("nan")
        fpr, tpr, thr = roc_curve(y_true, score, drop_intermediate=False)
        finite = np.isfinite(thr)
        j = np.where(finite, tpr - fpr, -np.inf)
        best = np.flatnonzero(j == j.max())
        return float(np.clip(thr[best[0]], 0.0, 1.0))
    try:
        value = float(rule)
    except ValueError:
        raise ConfigError(f"unknown threshold rule '{rule}'. Available: {', '.join(THRESHOLD_RULES)} or a number in (0, 1)") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"a numeric threshold must lie in (0, 1), got {rule}")
    return value
