"""Checkpoint selection rules (MEDFAIR; issue 7): which epoch to report, chosen on VALIDATION only.

The candidates are the epochs of one run (the rows of ``history.csv``). ``a[k, g]`` is the validation
AUROC of epoch ``k`` on group ``g`` of ``fair_attr`` (history columns ``val_auroc[<fair_attr>=<g>]``,
written only for groups with both classes that pass the small-cell rule on validation,
:func:`large_enough`: ``n``, and for a binary task ``n_pos`` and ``n − n_pos``, at least
:data:`MIN_GROUP_SIZE`, the report's default minimum — a group of three stays would otherwise decide
``worst_group`` by noise alone); a group column undefined at any epoch is left out. Test metrics are
never read: the history holds validation metrics only.

* ``overall``: the trainer's own criterion (validation AUPRC, kappa for LOS; late fusion: each branch at
  its own best epoch) — the default ``predictions_{val,test}.csv``, so it needs no files of its own.
* ``worst_group``: argmax_k min_g a[k, g].
* ``pareto`` (MEDFAIR's minimax Pareto): keep the epochs not dominated on the vector of group AUROCs
  (j dominates k when a[j, g] >= a[k, g] for every g and > for one); among them pick the best AUROC on
  the group that is worst at the ``overall`` epoch (MEDFAIR: "the group that was worst under ERM").
* ``dto`` (MEDFAIR, after Han et al.): normalise each group column by its maximum over the epochs,
  ã[k, g] = a[k, g] / max_k a[k, g], so the utopia point is (1, …, 1); pick argmin_k
  sqrt(Σ_g (1 − ã[k, g])²).

The other rules take the whole model as it was at the chosen epoch (late fusion included, whose
``overall`` checkpoint keeps each branch at its own best epoch). Ties go to the earlier epoch (for ``pareto``: the higher worst group first). Without at least one group
column (no group of ``fair_attr`` with both classes in validation) every rule falls back to the
``overall`` epoch, with a warning.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

RULES = ("overall", "worst_group", "pareto", "dto")
#: Small-cell minimum of the groups that may drive a selection rule (the report's ``min_group_size`` default).
MIN_GROUP_SIZE = 10


def large_enough(labels: np.ndarray, min_group_size: int | None = None) -> bool:
    """Whether a validation group may enter the selection rules: at least ``min_group_size`` (default
    :data:`MIN_GROUP_SIZE`) stays and, for a binary label vector, at least that many positives and negatives
    (multilabel and multiclass: stays only, as their AUROC is a macro over labels or classes)."""
    min_group_size = MIN_GROUP_SIZE if min_group_size is None else min_group_size
    y = np.asarray(labels)
    if y.shape[0] < min_group_size:
        return False
    if y.ndim == 1 and set(np.unique(y[np.isfinite(y.astype(float))]).tolist()) <= {0, 1}:
        n_pos = int(np.nansum(y.astype(float)))
        return min(n_pos, y.shape[0] - n_pos) >= min_group_size
    return True


def group_auroc_matrix(history: pd.DataFrame, fair_attr: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(epochs [K], a [K, G], group names) from the ``val_auroc[<fair_attr>=<g>]`` columns of ``history``."""
    pattern = re.compile(rf"^val_auroc\[{re.escape(fair_attr)}=(.*)\]$")
    columns = [c for c in history.columns if pattern.match(c)]
    values = history[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float) if columns else np.zeros((len(history), 0))
    keep = np.isfinite(values).all(axis=0) if len(history) else np.zeros(len(columns), dtype=bool)
    names = [pattern.match(c).group(1) for c, k in zip(columns, keep) if k]  # type: ignore[union-attr]
    return history["epoch"].to_numpy(dtype=int), values[:, keep], names


def _non_dominated(a: np.ndarray) -> np.ndarray:
    k = len(a)
    keep = np.ones(k, dtype=bool)
    for i in range(k):
        dominated = np.all(a >= a[i], axis=1) & np.any(a > a[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def choose_epochs(history: pd.DataFrame, rules: tuple[str, ...] | list[str], fair_attr: str,
                  overall_epoch: int) -> dict[str, int]:  # fmt: skip
    """The epoch each rule picks (see the module docstring); ``overall_epoch`` is the trainer's choice."""
    epochs, a, names = group_auroc_matrix(history, fair_attr)
    out: dict[str, int] = {}
    for rule in rules:
        if rule not in RULES:
            raise ValueError(f"unknown selection rule '{rule}'")
        if rule == "overall" or a.shape[1] == 0:
            if rule != "overall":
                log.warning("selection '%s': no group of %s has a defined validation AUROC; using the overall epoch",
                            rule, fair_attr)  # fmt: skip
            out[rule] = int(overall_epoch)
            continue
        worst = a.min(axis=1)
        if rule == "worst_group":
            k = int(np.argmax(worst))  # first maximum: the earliest epoch
        elif rule == "pareto":
            front = np.flatnonzero(_non_dominated(a))
            at_overall = np.flatnonzero(epochs == overall_epoch)
            ref = a[at_overall[0]] if at_overall.size else a[int(np.argmax(worst))]
            g = int(np.argmin(ref))
            k = int(min(front, key=lambda i: (-a[i, g], -worst[i], i)))
        else:  # dto
            top = a.max(axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                norm = np.where(top > 0, a / top, 0.0)
            dist = np.sqrt(((1.0 - norm) ** 2).sum(axis=1))
            k = int(np.argmin(dist))
        out[rule] = int(epochs[k])
        log.info("selection '%s' on %s groups (%s): epoch %d", rule, fair_attr, ", ".join(names), out[rule])
    return out
