"""Operating points and post-hoc recalibration, always fitted on validation predictions (never on test).

Threshold rules (``--threshold``), a stay being predicted positive when its score is ``>=`` the threshold:

* ``val-youden`` — maximises TPR − FPR on validation (ties: the highest threshold);
* ``val-sens-0.8`` — the highest threshold whose validation sensitivity (TPR) is at least 0.8;
* ``val-spec-0.8`` — the lowest threshold whose validation specificity (1 − FPR) is at least 0.8;
* ``val-prevalence`` — the ``k``-th highest validation score, ``k`` the number of validation positives,
  so about as many stays are flagged as are positive (ties can flag a few more);
* ``0.5`` or any number in (0, 1) — taken as given.

The target in ``val-sens-X`` / ``val-spec-X`` may be any number in (0, 1). A rule that is undefined on
these labels (a single class) gives NaN, never a silent default.

Recalibration (``--recalibrate``): ``platt`` (logistic regression on the logit of the score) or
``isotonic`` (monotone, clipped to [0, 1]), fitted on validation labels and scores; :func:`fit_recalibrator`
returns the map to apply to validation (to choose thresholds) and test scores alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal

import numpy as np
from sklearn.metrics import roc_curve

from mmfair.core.errors import ConfigError

#: The rules the trainer stores in ``threshold.json``; evaluation chooses any other rule on
#: ``predictions_val.csv`` when it needs it (validation again).
THRESHOLD_RULES = ("val-youden", "0.5")
#: Every named rule (``val-sens-X``/``val-spec-X`` accept any target X in (0, 1), a number is a fixed threshold).
ALL_THRESHOLD_RULES = ("val-youden", "val-sens-0.8", "val-spec-0.8", "val-prevalence", "0.5")
RECALIBRATION = ("none", "platt", "isotonic")

_TARGET = re.compile(r"^val-(sens|spec)-(0?\.\d+)$")


@dataclass(frozen=True)
class ThresholdRule:
    """A threshold rule, parsed: ``kind`` youden | prevalence | sens | spec (chosen on validation) or fixed;
    ``value`` the target of sens/spec, the threshold of fixed; ``text`` the rule as written (the tidy tables'
    ``threshold_rule``)."""

    kind: Literal["youden", "prevalence", "sens", "spec", "fixed"]
    text: str
    value: float | None = None

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=256)
def parse_rule(rule: str) -> ThresholdRule:
    """The one parser of threshold rules (raises :class:`ConfigError` naming the rule)."""
    if isinstance(rule, ThresholdRule):
        return rule
    if rule in ("val-youden", "val-prevalence"):
        return ThresholdRule(rule.removeprefix("val-"), rule)  # type: ignore[arg-type]
    m = _TARGET.match(rule)
    if m:
        target = float(m.group(2))
        if not 0.0 < target < 1.0:
            raise ConfigError(f"the target of '{rule}' must lie in (0, 1)")
        return ThresholdRule(m.group(1), rule, target)  # type: ignore[arg-type]
    try:
        value = float(rule)
    except ValueError:
        raise ConfigError(
            f"unknown threshold rule '{rule}'. Available: {', '.join(ALL_THRESHOLD_RULES)}, val-sens-X, val-spec-X "
            "or a number in (0, 1)"
        ) from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"a numeric threshold must lie in (0, 1), got {rule}")
    return ThresholdRule("fixed", rule, value)


def check_rule(rule: str) -> str:
    """Validate a threshold rule's spelling (raises :class:`ConfigError`); returns it unchanged."""
    return parse_rule(rule).text


def choose_threshold(y_true: np.ndarray, score: np.ndarray, rule: str | ThresholdRule) -> float:
    """The threshold a rule picks on *validation* labels and probabilities (see the module docstring).

    NaN scores (stays a method cannot score) are ignored. Returns NaN when the rule is undefined on these
    labels (a single class, or nothing scored).
    """
    rule = parse_rule(rule)
    if rule.kind == "fixed":
        return float(rule.value)  # type: ignore[arg-type]
    y_true = np.asarray(y_true, dtype=float)
    score = np.asarray(score, dtype=float)
    keep = ~(np.isnan(y_true) | np.isnan(score))
    y_true, score = y_true[keep], score[keep]
    if y_true.size == 0 or np.unique(y_true).size < 2:
        return float("nan")
    if rule.kind == "prevalence":
        k = int(y_true.sum())
        return float(np.clip(np.sort(score)[::-1][k - 1], 0.0, 1.0))
    fpr, tpr, thr = roc_curve(y_true, score, drop_intermediate=False)  # thresholds decreasing
    finite = np.isfinite(thr)
    if rule.kind == "youden":
        j = np.where(finite, tpr - fpr, -np.inf)
        best = np.flatnonzero(j == j.max())
        return float(np.clip(thr[best[0]], 0.0, 1.0))
    target = float(rule.value)  # type: ignore[arg-type]
    if rule.kind == "sens":
        ok = np.flatnonzero(finite & (tpr >= target - 1e-12))  # the first (highest) threshold reaching it
        return float(np.clip(thr[ok[0]], 0.0, 1.0))
    # the last (lowest) threshold keeping it; roc_curve's first threshold (+inf, flagging nobody: specificity 1)
    # is the answer when every finite one is too low (e.g. all scores tied), clipped to 1.0 like any other
    ok = np.flatnonzero(1.0 - fpr >= target - 1e-12)
    return float(np.clip(thr[ok[-1]], 0.0, 1.0))


def fit_recalibrator(y_true, score, method: str) -> Callable[[np.ndarray], np.ndarray]:
    """A map ``scores -> recalibrated probabilities`` fitted on validation (NaN scores stay NaN).

    ``platt``: ``sigmoid(a · logit(s) + b)`` by (nearly unpenalised) logistic regression on the logit of
    the clipped score; monotone, so AUROC is unchanged. ``isotonic``: scikit-learn's isotonic regression,
    clipped to [0, 1] outside the validation range; monotone but not strictly, so it can create ties.
    ``none`` returns the identity. Raises :class:`ConfigError` for an unknown method and ``ValueError``
    when validation holds one class.
    """
    if method == "none":
        return lambda s: np.asarray(s, dtype=float)
    if method not in RECALIBRATION:
        raise ConfigError(f"unknown recalibration '{method}'. Available: {', '.join(RECALIBRATION)}")
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(score, dtype=float)
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep], s[keep]
    if np.unique(y).size < 2:
        raise ValueError("recalibration needs both classes in the validation predictions")

    def logit(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 1e-6, 1 - 1e-6)
        return np.log(x / (1 - x))

    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e6, max_iter=1000).fit(logit(s)[:, None], y.astype(int))

        def platt(x):
            x = np.asarray(x, dtype=float)
            out = np.full(x.shape, np.nan)
            ok = np.isfinite(x)
            out[ok] = model.predict_proba(logit(x[ok])[:, None])[:, 1]
            return out

        return platt
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)

    def isotonic(x):
        x = np.asarray(x, dtype=float)
        out = np.full(x.shape, np.nan)
        ok = np.isfinite(x)
        out[ok] = iso.predict(x[ok])
        return out

    return isotonic
