"""Fairness display helpers: which columns the fairness tables show, and the small-cell rule for
intersections of two attributes (DESIGN §3.4).

Intersections (``race_group*gender``, groups ``BLACK*F``) need more than the one-dimensional
complementary rule of :mod:`.suppression`: every *line* of the two-way table (all groups sharing the
first component, or all sharing the second) sums to a margin that the single-attribute tables may show.
So after the primary rule, any line with exactly one suppressed cell gets a second one (its smallest
other cell, ties by name), repeated until no line has exactly one; then the block-level rule as for a
single attribute. No suppressed count can then be recovered as a margin minus the visible cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmfair.core.reporting.suppression import complementary

#: Separator of an intersection attribute and of its group values (as written by evaluate_fairness).
INTERSECTION = "*"

#: Per-group columns of the fairness-groups table (tidy metric → header).
GROUP_COLUMNS = {"prevalence": "Prev.", "auroc": "AUROC", "tpr": "TPR", "fpr": "FPR", "ppv": "PPV",
                 "selection_rate": "Sel. rate", "ece": "ECE", "brier": "Brier"}  # fmt: skip
#: Gap columns of the fairness-gaps table (tidy metric → header), shown when present in the results.
GAP_COLUMNS = {
    "demographic_parity_difference": "DP diff", "demographic_parity_ratio": "DP ratio",
    "equalized_odds_difference": "EO diff", "equalized_odds_mean": "EO mean", "tpr_gap": "TPR gap",
    "fpr_gap": "FPR gap", "equal_opportunity_difference": "EOpp diff", "auroc_gap": "AUROC gap",
    "worst_group_auroc": "Worst-group AUROC", "es_auc": "ES-AUC", "ece_gap": "ECE gap", "brier_gap": "Brier gap",
}  # fmt: skip

FOOTNOTE_SPLIT = ("TPR gap vs FPR gap: a large TPR gap means unequal sensitivity (missed cases), a large FPR gap "
                  "unequal false alarms; EO diff is the larger of the two, EO mean their mean.")  # fmt: skip
FOOTNOTE_ES_AUC = ("ES-AUC = AUROC / (1 + Σ_g |AUROC − AUROC_g|), higher is better. ECE on 10 equal-width bins of "
                   "[0, 1].")  # fmt: skip
FOOTNOTE_GAP_CI = ("A max − min gap is biased upward in resamples when groups are small, so its interval can lie "
                   "above the point value; read it as the uncertainty of the gap's size, not as a test of zero.")  # fmt: skip


def gap_footnotes(metrics: set[str]) -> list[str]:
    """The footnotes that explain the gap columns present in a table."""
    notes = []
    if {"tpr_gap", "fpr_gap", "equalized_odds_mean"} & metrics:
        notes.append(FOOTNOTE_SPLIT)
    if {"es_auc", "ece_gap"} & metrics:
        notes.append(FOOTNOTE_ES_AUC)
    if metrics:
        notes.append(FOOTNOTE_GAP_CI)
    return notes
FOOTNOTE_INTERSECTION = ("Intersections (a*b): a cell is also suppressed when it is the only suppressed cell of "
                         "its row or column, so no count can be recovered from the single-attribute tables.")  # fmt: skip


def is_intersection(attribute: str) -> bool:
    return INTERSECTION in str(attribute)


def complementary_lines(groups, n, suppressed) -> np.ndarray:
    """The line rule for a two-way block of groups ``"x*y"`` (see the module docstring), then the block rule.

    Parameters
    ----------
    groups : array of ``"x*y"`` group names of one block (one run, label and intersection attribute)
    n : counts of the groups (the order of choosing complements: smallest first, ties by name)
    suppressed : bool array, the primary rule's flags
    """
    groups = np.asarray(groups, dtype=object)
    n = pd.to_numeric(pd.Series(n), errors="coerce").to_numpy(dtype=float)
    out = np.asarray(suppressed, dtype=bool).copy()
    parts = [str(g).split(INTERSECTION, 1) + [""] for g in groups]
    keys = [np.array([p[0] for p in parts], dtype=object), np.array([p[1] for p in parts], dtype=object)]
    changed = True
    while changed:
        changed = False
        for axis_keys in keys:
            for value in pd.unique(axis_keys):
                line = np.flatnonzero(axis_keys == value)
                if line.size > 1 and out[line].sum() == 1:
                    rest = [i for i in line if not out[i]]
                    pick = min(rest, key=lambda i: (np.nan_to_num(n[i], nan=np.inf), str(groups[i])))
                    out[pick] = True
                    changed = True
    return complementary(groups, n, out)


def complement(attribute: str, groups, n, suppressed) -> np.ndarray:
    """Complementary suppression for one block: the line rule for an intersection, the block rule otherwise."""
    if is_intersection(attribute):
        return complementary_lines(groups, n, suppressed)
    return complementary(groups, n, suppressed)
