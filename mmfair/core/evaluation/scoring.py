"""Shared scoring of the evaluators (clean, missing, fair): metrics of the evaluated stays as tidy rows.

Coverage rule (stays a method cannot score)
-------------------------------------------
A row is about a fixed set of evaluated stays, named in ``evaluated_on`` (``all``: every test stay of the
cohort; ``with_cxr``: the stays that have a CXR; ``common``: the stays two compared methods share) with
``n`` their number. A method that cannot score every one of them (an empty score: ``cxr``, ``daft`` on a
stay without a CXR) gets ``defined=false`` there, never a value on a subset of its own choosing: a
number on a smaller, possibly biased subset would be compared with others' numbers on the whole set
(issue 11). Every method is scored on the ``with_cxr`` stays too, so one leaderboard holds every method.

Undefined metrics
-----------------
A metric that cannot be computed (one class in a subgroup, no positives in a replicate) is NaN inside
the evaluators and ``defined=false`` with an empty value in the table; it is never 0. Gaps are computed
over the groups where the underlying metric is defined, and are themselves undefined with fewer than two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.run_folder import TaskSpec, presence
from mmfair.core.evaluation.tidy import make_row

log = logging.getLogger(__name__)

#: ``evaluated_on`` values (tidy schema): every stay of the test cohort, the stays with a CXR, the stays
#: shared by two compared methods.
ON_ALL, ON_CXR, ON_COMMON = "all", "with_cxr", "common"

Progress = Callable[[str, int, int], None] | None
#: ``predict_fn(run_dir, split, present_override)``; EHR perturbation scenarios also pass the keyword
#: ``ehr_transform`` (see :func:`mmfair.core.training.runs.predict`), so other predict_fns need not take it.
PredictFn = Callable[..., pd.DataFrame]

_SCORE_METRICS = {"auroc": M.auroc, "auprc": M.auprc, "brier": M.brier}
#: ``kappa`` is Cohen's unweighted kappa; ``kappa_linear`` the linear-weighted one that training selects on.
_CLASS_METRICS = {"accuracy": M.accuracy_from_confusion, "kappa": M.kappa_from_confusion,
                  "kappa_linear": M.kappa_linear_from_confusion, "macro_f1": M.macro_f1_from_confusion}  # fmt: skip


@dataclass
class Stat:
    """One metric on the evaluated stays: its value, bootstrap replicates, counts and whether it is defined."""

    value: float
    reps: np.ndarray
    n: int | None
    n_pos: int | None
    defined: bool


#: Private key of a row holding its replicate values until ``missing._pool_draws`` has used them
#: (``to_frame`` keeps the tidy columns only, so it never reaches a table).
REPS = "_reps"


def stat_row(base: dict, boot: PatientBootstrap, metric: str, stat: Stat, **fields) -> dict:
    """The tidy row of ``stat`` with its bootstrap interval (replicates kept under :data:`REPS`)."""
    ci = boot.ci(stat.reps) if stat.defined and boot.n_boot else None
    if ci is not None and ci.n_dropped:
        log.debug("%s %s: %d of %d replicates undefined and dropped", base.get("run_id"), metric, ci.n_dropped, boot.n_boot)
    row = make_row(
        **base, **fields, metric=metric, value=stat.value, n=stat.n, n_pos=stat.n_pos, defined=stat.defined,
        ci_low=ci.low if ci else None, ci_high=ci.high if ci else None,
    )  # fmt: skip
    if ci is not None:
        row[REPS] = stat.reps
    return row


def covered(n: int, n_eval: int) -> bool:
    """A method covers the evaluated stays when it scored every one of them (see the module docstring)."""
    return n > 0 and n == n_eval


def score_target(y, s, eval_mask, boot: PatientBootstrap, names: Sequence[str]) -> dict[str, Stat]:
    """Threshold-free metrics of one label on the evaluated stays, with replicates (``n``: the evaluated stays)."""
    scored = eval_mask & np.isfinite(s)
    n_eval, n = int(eval_mask.sum()), int(scored.sum())
    ok = covered(n, n_eval)
    yy, ss = y[scored], s[scored]
    w = boot.weights[:, scored]
    n_pos = int(np.nansum(y[eval_mask]))
    out = {}
    for name in names:
        fn = _SCORE_METRICS[name]
        value = fn(yy, ss) if ok else float("nan")
        reps = fn(yy, ss, w) if ok and boot.n_boot else np.full(boot.n_boot, np.nan)
        out[name] = Stat(value, reps, n_eval, n_pos, ok and bool(np.isfinite(value)))
    return out


def macro(per_label: list[dict[str, Stat]], labels: list[str], names: Sequence[str], n_boot: int) -> dict[str, Stat]:
    """Unweighted mean over the labels where the metric is defined; a replicate with any of them undefined is dropped."""
    out = {}
    for name in names:
        used = [i for i, d in enumerate(per_label) if d[name].defined]
        left = [labels[i] for i, d in enumerate(per_label) if not d[name].defined]
        if left:
            log.info("macro %s leaves out undefined labels: %s", name, ", ".join(left))
        if not used:
            out[name] = Stat(float("nan"), np.full(n_boot, np.nan), None, None, False)
            continue
        value = float(np.mean([per_label[i][name].value for i in used]))
        reps = np.mean(np.stack([per_label[i][name].reps for i in used]), axis=0) if n_boot else np.empty(0)
        out[name] = Stat(value, reps, per_label[used[0]][name].n, None, True)
    return out


def _score_multiclass(pred: pd.DataFrame, spec: TaskSpec, eval_mask, boot) -> dict[str, Stat]:
    scores = pred[list(spec.class_columns)].to_numpy(dtype=float)
    scored = eval_mask & np.isfinite(scores).all(axis=1)
    n_eval, n = int(eval_mask.sum()), int(scored.sum())
    ok = covered(n, n_eval)
    k = len(spec.class_columns)
    y = pred["label"].to_numpy()[scored].astype(int)
    yhat = np.argmax(scores[scored], axis=1) if n else np.zeros(0, dtype=int)
    cm = M.confusion(y, yhat, k)
    cm_b = M.confusion(y, yhat, k, boot.weights[:, scored]) if boot.n_boot else None
    out = {}
    for name, fn in _CLASS_METRICS.items():
        value = float(fn(cm)[0]) if ok else float("nan")
        reps = fn(cm_b) if ok and cm_b is not None else np.full(boot.n_boot, np.nan)
        out[name] = Stat(value, reps, n_eval, None, ok and bool(np.isfinite(value)))
    return out


def task_rows(pred: pd.DataFrame, spec: TaskSpec, eval_mask, boot, base, names: Sequence[str]) -> list[dict]:
    """Rows for every label of a task (plus the macro ``all`` for phenotypes)."""
    rows: list[dict] = []
    if spec.kind == "multiclass":
        for name, stat in _score_multiclass(pred, spec, eval_mask, boot).items():
            rows.append(stat_row(base, boot, name, stat, label="all"))
        return rows
    per_label, labels = [], []
    for label, label_col, score_col in spec.targets:
        y = pred[label_col].to_numpy(dtype=float)
        s = pred[score_col].to_numpy(dtype=float)
        stats = score_target(y, s, eval_mask, boot, names)
        per_label.append(stats)
        labels.append(label)
        for name in names:
            rows.append(stat_row(base, boot, name, stats[name], label=label))
    if spec.kind == "multilabel":
        for name, stat in macro(per_label, labels, names, boot.n_boot).items():
            rows.append(stat_row(base, boot, name, stat, label="all"))
    return rows


def natural_missing_rate(pred: pd.DataFrame, modality: str = "cxr") -> float | None:
    """The natural share of the stays without ``modality`` (None when the predictions do not say)."""
    if f"present_{modality}" not in pred.columns or len(pred) == 0:
        return None
    return float(1.0 - presence(pred, modality).mean())


def evaluated_sets(pred: pd.DataFrame, source: object = "predictions") -> dict[str, np.ndarray]:
    """The fixed sets of evaluated stays: ``all`` and, where ``present_cxr`` is known and some stay has a CXR,
    ``with_cxr``."""
    out = {ON_ALL: np.ones(len(pred), dtype=bool)}
    if "present_cxr" in pred.columns:
        with_cxr = presence(pred, "cxr", source)
        if with_cxr.any():
            out[ON_CXR] = with_cxr
    return out
