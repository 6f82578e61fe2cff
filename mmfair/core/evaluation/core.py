"""The one evaluation core: clean test metrics, missing-CXR scenarios and fairness, as tidy rows.

All three entry points read finished run folders (DESIGN §3.3), score **test** predictions only, attach
patient-level bootstrap intervals (:mod:`.bootstrap`) and return rows of the tidy schema (:mod:`.tidy`).

Coverage rule (stays a method cannot score)
-------------------------------------------
A stay with an empty score is left out of the metric and ``n`` counts the stays that *were* scored.
If fewer than ``MIN_SCORED_SHARE`` (half) of the evaluated stays were scored, or none, the row is
``defined=false`` with an empty value: the number would describe a different population.

Undefined metrics
-----------------
A metric that cannot be computed (one class in a subgroup, no positives in a replicate) is NaN inside
the core and ``defined=false`` with an empty value in the table; it is never 0. Gaps are computed over
the groups where the underlying metric is defined, and are themselves undefined with fewer than two.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from mmfair.core.config import EvalFairConfig, EvalMissingConfig
from mmfair.core.errors import InputFileError
from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.runs import (
    RunInfo,
    TaskSpec,
    check_aligned,
    cost_values,
    load_run_info,
    presence,
    predictions_path,
    read_predictions,
    subject_ids,
    task_spec,
    thresholds_for,
)
from mmfair.core.evaluation.scenarios import draw_seed, stratified_removal
from mmfair.core.evaluation.tidy import make_row, to_frame

log = logging.getLogger(__name__)

#: Smallest share of the evaluated stays a method must score for a row to be ``defined``.
MIN_SCORED_SHARE = 0.5
#: The group name given to an empty attribute value.
MISSING_GROUP = "unknown"

_MISSING_ATTRIBUTE = "{0}: sensitive attribute column '{1}' is missing"

Progress = Callable[[str, int, int], None] | None
PredictFn = Callable[[Path, str, dict[str, np.ndarray]], pd.DataFrame]

_SCORE_METRICS = {"auroc": M.auroc, "auprc": M.auprc, "brier": M.brier}
_CLASS_METRICS = {"accuracy": M.accuracy_from_confusion, "kappa": M.kappa_from_confusion,
                  "macro_f1": M.macro_f1_from_confusion}  # fmt: skip


@dataclass
class _Stat:
    value: float
    reps: np.ndarray
    n: int | None
    n_pos: int | None
    defined: bool


def _row(base: dict, boot: PatientBootstrap, metric: str, stat: _Stat, **fields) -> dict:
    ci = boot.ci(stat.reps) if stat.defined and boot.n_boot else None
    if ci is not None and ci.n_dropped:
        log.debug("%s %s: %d of %d replicates undefined and dropped", base.get("run_id"), metric, ci.n_dropped, boot.n_boot)
    return make_row(
        **base, **fields, metric=metric, value=stat.value, n=stat.n, n_pos=stat.n_pos, defined=stat.defined,
        ci_low=ci.low if ci else None, ci_high=ci.high if ci else None,
    )  # fmt: skip


def _covered(n: int, n_eval: int) -> bool:
    return n > 0 and n >= MIN_SCORED_SHARE * n_eval


def _score_target(y, s, eval_mask, boot: PatientBootstrap, names: Sequence[str]) -> dict[str, _Stat]:
    """Threshold-free metrics of one label on the evaluated stays, with replicates."""
    scored = eval_mask & np.isfinite(s)
    n_eval, n = int(eval_mask.sum()), int(scored.sum())
    yy, ss = y[scored], s[scored]
    w = boot.weights[:, scored]
    ok = _covered(n, n_eval)
    out = {}
    for name in names:
        fn = _SCORE_METRICS[name]
        value = fn(yy, ss) if ok else float("nan")
        reps = fn(yy, ss, w) if ok and boot.n_boot else np.full(boot.n_boot, np.nan)
        out[name] = _Stat(value, reps, n, int(yy.sum()), ok and bool(np.isfinite(value)))
    return out


def _macro(per_label: list[dict[str, _Stat]], labels: list[str], names: Sequence[str], n_boot: int) -> dict[str, _Stat]:
    """Unweighted mean over the labels where the metric is defined; a replicate with any of them undefined is dropped."""
    out = {}
    for name in names:
        used = [i for i, d in enumerate(per_label) if d[name].defined]
        left = [labels[i] for i, d in enumerate(per_label) if not d[name].defined]
        if left:
            log.info("macro %s leaves out undefined labels: %s", name, ", ".join(left))
        if not used:
            out[name] = _Stat(float("nan"), np.full(n_boot, np.nan), None, None, False)
            continue
        value = float(np.mean([per_label[i][name].value for i in used]))
        reps = np.mean(np.stack([per_label[i][name].reps for i in used]), axis=0) if n_boot else np.empty(0)
        out[name] = _Stat(value, reps, per_label[used[0]][name].n, None, True)
    return out


def _score_multiclass(pred: pd.DataFrame, spec: TaskSpec, eval_mask, boot) -> dict[str, _Stat]:
    scores = pred[list(spec.class_columns)].to_numpy(dtype=float)
    scored = eval_mask & np.isfinite(scores).all(axis=1)
    n_eval, n = int(eval_mask.sum()), int(scored.sum())
    ok = _covered(n, n_eval)
    k = len(spec.class_columns)
    y = pred["label"].to_numpy()[scored].astype(int)
    yhat = np.argmax(scores[scored], axis=1) if n else np.zeros(0, dtype=int)
    cm = M.confusion(y, yhat, k)
    cm_b = M.confusion(y, yhat, k, boot.weights[:, scored]) if boot.n_boot else None
    out = {}
    for name, fn in _CLASS_METRICS.items():
        value = float(fn(cm)[0]) if ok else float("nan")
        reps = fn(cm_b) if ok and cm_b is not None else np.full(boot.n_boot, np.nan)
        out[name] = _Stat(value, reps, n, None, ok and bool(np.isfinite(value)))
    return out


def _task_rows(pred: pd.DataFrame, spec: TaskSpec, eval_mask, boot, base, names: Sequence[str]) -> list[dict]:
    """Rows for every label of a task (plus the macro ``all`` for phenotypes)."""
    rows: list[dict] = []
    if spec.kind == "multiclass":
        for name, stat in _score_multiclass(pred, spec, eval_mask, boot).items():
            rows.append(_row(base, boot, name, stat, label="all"))
        return rows
    per_label, labels = [], []
    for label, label_col, score_col in spec.targets:
        y = pred[label_col].to_numpy(dtype=float)
        s = pred[score_col].to_numpy(dtype=float)
        stats = _score_target(y, s, eval_mask, boot, names)
        per_label.append(stats)
        labels.append(label)
        for name in names:
            rows.append(_row(base, boot, name, stats[name], label=label))
    if spec.kind == "multilabel":
        for name, stat in _macro(per_label, labels, names, boot.n_boot).items():
            rows.append(_row(base, boot, name, stat, label="all"))
    return rows


def _natural_missing_rate(pred: pd.DataFrame, modality: str = "cxr") -> float | None:
    if f"present_{modality}" not in pred.columns or len(pred) == 0:
        return None
    return float(1.0 - presence(pred, modality).mean())


# --------------------------------------------------------------------------------------------------
# clean


def evaluate_clean(
    run_dirs: Sequence[Path], *, bootstrap: int = 200, seed: int = 0, progress: Progress = None
) -> pd.DataFrame:
    """Clean test metrics of each run, with patient-level bootstrap intervals.

    Parameters
    ----------
    run_dirs : sequence of Path
        Finished run folders.
    bootstrap : int
        Replicates of the patient-level bootstrap (0: no intervals).
    seed : int
        Bootstrap seed; the same for every run, so runs on one test fold get paired replicates.

    Returns
    -------
    DataFrame in the tidy schema, ``scenario=none``:

    * binary tasks: ``auroc``, ``auprc``, ``brier`` with ``label=all``;
    * phenotypes: the same per label slug and their unweighted mean (macro) as ``label=all``;
    * length of stay: ``accuracy``, ``kappa`` (Cohen's, unweighted), ``macro_f1`` on the arg-max class;
    * cost rows ``n_params``, ``train_seconds`` (sum over epochs), ``peak_memory_mb`` (max) where known.

    ``missing_rate`` is the natural share of evaluated test stays without a CXR.
    """
    rows: list[dict] = []
    run_dirs = list(run_dirs)
    for i, run_dir in enumerate(run_dirs):
        info = load_run_info(run_dir)
        pred = read_predictions(run_dir, "test")
        source = predictions_path(run_dir, "test")
        spec = task_spec(pred, source)
        boot = PatientBootstrap(subject_ids(pred, source), bootstrap, seed)
        base = {**info.row_base(), "missing_rate": _natural_missing_rate(pred)}
        names = ("auroc", "auprc", "brier")
        rows += _task_rows(pred, spec, np.ones(len(pred), dtype=bool), boot, base, names)
        for metric, value in cost_values(info).items():
            rows.append(make_row(**base, metric=metric, value=value, defined=True))
        if progress:
            progress("clean metrics", i + 1, len(run_dirs))
    return to_frame(rows)


# --------------------------------------------------------------------------------------------------
# missing modality


def _mask_key(run_dir: Path, split: str, modality: str, keep: np.ndarray) -> tuple[str, str, str, str]:
    digest = hashlib.sha1(np.packbits(keep).tobytes() + str(keep.size).encode()).hexdigest()
    return (str(Path(run_dir).resolve()), split, modality, digest)


def _strata(pred: pd.DataFrame, spec: TaskSpec) -> tuple[np.ndarray, str]:
    if spec.kind == "multilabel":
        col = spec.targets[0][1]
    else:
        col = "label"
    return pred[col].to_numpy(), col


def evaluate_missing(
    run_dirs: Sequence[Path], config: EvalMissingConfig, predict_fn: PredictFn, *, progress: Progress = None
) -> pd.DataFrame:
    """Test metrics when the CXR is removed from a share of the test stays that have one.

    For each run, each rate in ``{0} ∪ config.rates`` and each draw (one draw at rate 0), the scenario
    ``mcar`` (:func:`~mmfair.core.evaluation.scenarios.stratified_removal`) removes the CXR from exactly
    ``round(rate × n)`` of the ``n`` test stays with ``present_cxr == 1``, the same share from each label
    stratum (phenotypes: the first phenotype label). The run is re-scored with
    ``predict_fn(run_dir, "test", {"cxr": keep})`` (``keep`` aligned with the rows of
    ``predictions_test.csv``; results are cached per run and mask within the call). The evaluated stays
    are those that had a CXR; stays without one naturally are outside the evaluated set.

    Rows: ``scenario=mcar``, ``scenario_params`` JSON (modality, requested rate, stratification column),
    ``missing_rate`` = removed / evaluated (the final share without the modality), ``draw``,
    ``draw_seed`` (from ``config.seed``, rate, draw: reproducible and shared by runs on the same fold),
    metrics ``auroc`` and ``auprc`` (length of stay: ``accuracy``, ``kappa``, ``macro_f1``) with
    intervals from the patient-level bootstrap (seed ``config.seed``) and the coverage rule of this
    module.
    """
    modality = config.modality
    rates = sorted({0.0, *(float(r) for r in config.rates)})
    rows: list[dict] = []
    cache: dict[tuple, pd.DataFrame] = {}
    run_dirs = list(run_dirs)
    total = len(run_dirs) * sum(1 if r == 0 else config.draws for r in rates)
    done = 0
    for run_dir in run_dirs:
        info = load_run_info(run_dir)
        pred = read_predictions(run_dir, "test")
        source = predictions_path(run_dir, "test")
        spec = task_spec(pred, source)
        present = presence(pred, modality, source)
        strata, strata_col = _strata(pred, spec)
        boot = PatientBootstrap(subject_ids(pred, source), config.bootstrap, config.seed)
        n_eval = int(present.sum())
        names = ("auroc", "auprc")
        for rate in rates:
            for draw in range(1 if rate == 0 else config.draws):
                dseed = draw_seed(config.seed, rate, draw)
                keep = stratified_removal(present, strata, rate, dseed)
                key = _mask_key(run_dir, "test", modality, keep)
                if key not in cache:
                    out = predict_fn(Path(run_dir), "test", {modality: keep.copy()})
                    check_aligned(out, pred, Path(run_dir), "test")
                    cache[key] = out
                scored = cache[key].copy()
                for _, label_col, _ in spec.targets:  # labels always from the saved predictions
                    scored[label_col] = pred[label_col].to_numpy()
                if spec.kind == "multiclass":
                    scored["label"] = pred["label"].to_numpy()
                removed = int((present & ~keep).sum())
                params = {"modality": modality, "requested_rate": rate, "stratified_on": strata_col}
                base = {
                    **info.row_base(), "scenario": "mcar", "scenario_params": json.dumps(params, sort_keys=True),
                    "missing_rate": removed / n_eval if n_eval else float("nan"), "draw": draw, "draw_seed": dseed,
                }  # fmt: skip
                rows += _task_rows(scored, spec, present, boot, base, names)
                done += 1
                if progress:
                    progress("missing-modality scenarios", done, total)
    return to_frame(rows)


# --------------------------------------------------------------------------------------------------
# fairness


def _group_frame(y, s, thr: float, groups: pd.Series) -> pd.DataFrame:
    """fairlearn's disaggregation of the score metrics and, at threshold ``thr``, the rate metrics.

    The rate metrics receive hard predictions (``score >= thr``): fairlearn's rates silently count
    ``y_pred == 1`` and would be wrong on probabilities.
    """

    def auroc(y_true, y_pred):
        return M.auroc(y_true, y_pred)

    def auprc(y_true, y_pred):
        return M.auprc(y_true, y_pred)

    def tpr(y_true, y_pred):
        return M.tpr(y_true, (y_pred >= thr).astype(float))

    def fpr(y_true, y_pred):
        return M.fpr(y_true, (y_pred >= thr).astype(float))

    def selection_rate(y_true, y_pred):
        return M.selection_rate(y_true, (y_pred >= thr).astype(float))

    frame = MetricFrame(
        metrics={"auroc": auroc, "auprc": auprc, "tpr": tpr, "fpr": fpr, "selection_rate": selection_rate},
        y_true=y, y_pred=s, sensitive_features=groups,
    )  # fmt: skip
    by_group = frame.by_group
    by_group.index = [str(v) for v in by_group.index]
    return by_group


_GROUP_METRICS = ("prevalence", "auroc", "auprc", "tpr", "fpr", "selection_rate")


def _group_labels(pred: pd.DataFrame, attribute: str, source: object) -> np.ndarray:
    if attribute not in pred.columns:
        raise InputFileError(_MISSING_ATTRIBUTE.format(source, attribute))
    col = pred[attribute]
    return np.asarray([MISSING_GROUP if pd.isna(v) or str(v) == "" else str(v) for v in col], dtype=object)


def _fairness_target(y, s, thr, groups, boot: PatientBootstrap, base: dict, attribute: str, label: str) -> list[dict]:
    scored = np.isfinite(s)
    n_all = int(scored.size)
    y, s, g, w = y[scored], s[scored], groups[scored], boot.weights[:, scored]
    hard = (s >= thr).astype(float)  # positive at or above the validation threshold (roc_curve's convention)
    rows: list[dict] = []
    if not _covered(int(scored.sum()), n_all):
        log.info("%s %s: too few scored stays for fairness rows", base.get("run_id"), label)
        return rows
    by_group = _group_frame(y, s, thr, pd.Series(g, name=attribute))
    counts = pd.DataFrame({"g": g, "y": y}).groupby("g")["y"].agg(["size", "sum"])
    by_group["n"] = counts["size"].reindex(by_group.index).to_numpy()
    by_group["n_pos"] = counts["sum"].reindex(by_group.index).to_numpy()
    by_group["prevalence"] = by_group["n_pos"] / by_group["n"]
    groups_sorted = list(by_group.index)
    fields = {"label": label, "attribute": attribute}
    xs = {"prevalence": y, "auroc": s, "auprc": s, "tpr": hard, "fpr": hard, "selection_rate": hard}
    fns = {"prevalence": lambda yy, xx, ww: M.prevalence(yy, ww), "auroc": M.auroc, "auprc": M.auprc,
           "tpr": M.tpr, "fpr": M.fpr, "selection_rate": M.selection_rate}  # fmt: skip
    group_reps: dict[tuple[str, str], np.ndarray] = {}
    for grp in groups_sorted:
        r = by_group.loc[grp]
        n, n_pos = int(r["n"]), int(r["n_pos"])
        m = g == grp
        for name in _GROUP_METRICS:
            value = float(r[name])
            reps = fns[name](y[m], xs[name][m], w[:, m]) if boot.n_boot else np.empty(0)
            group_reps[(name, grp)] = reps
            stat = _Stat(value, reps, n, n_pos, bool(np.isfinite(value)))
            rows.append(_row(base, boot, name, stat, group=grp, **fields))

    n_of = {grp: int(by_group.loc[grp, "n"]) for grp in groups_sorted}
    pos_of = {grp: int(by_group.loc[grp, "n_pos"]) for grp in groups_sorted}
    has_pos = [grp for grp in groups_sorted if pos_of[grp] > 0]
    both = [grp for grp in has_pos if n_of[grp] - pos_of[grp] > 0]

    def gap_stat(members, value_fn, reps_fn) -> _Stat:
        n = sum(n_of[m] for m in members)
        n_pos = sum(pos_of[m] for m in members)
        if len(members) < 2:
            return _Stat(float("nan"), np.full(boot.n_boot, np.nan), n, n_pos, False)
        value = float(value_fn())
        reps = reps_fn(members) if boot.n_boot else np.empty(0)
        return _Stat(value, reps, n, n_pos, bool(np.isfinite(value)))

    def reps_of(metric: str, members: list[str]) -> np.ndarray:
        """``[B, G]`` replicate values of a group metric for the groups in ``members``."""
        return np.stack([group_reps[(metric, m)] for m in members], axis=1)

    def spread(a: np.ndarray) -> np.ndarray:
        return a.max(axis=1) - a.min(axis=1)  # NaN in any group propagates: that replicate is dropped

    def between(metric: str, members: list[str]) -> float:
        """fairlearn's ``between_groups`` difference (max − min), over ``members`` only."""
        col = by_group.loc[members, metric].to_numpy(dtype=float)
        return float(np.max(col) - np.min(col))  # a NaN is never skipped (unlike MetricFrame.difference)

    gaps = {
        "demographic_parity_difference": gap_stat(
            groups_sorted,
            lambda: between("selection_rate", groups_sorted),
            lambda mem: spread(reps_of("selection_rate", mem)),
        ),
        "equalized_odds_difference": gap_stat(
            both,
            lambda: max(between("tpr", both), between("fpr", both)),
            lambda mem: np.maximum(spread(reps_of("tpr", mem)),
                                   spread(reps_of("fpr", mem))),
        ),  # fmt: skip
        "equal_opportunity_difference": gap_stat(
            has_pos,
            lambda: between("tpr", has_pos),
            lambda mem: spread(reps_of("tpr", mem)),
        ),
        "auroc_gap": gap_stat(
            both,
            lambda: between("auroc", both),
            lambda mem: spread(reps_of("auroc", mem)),
        ),
        "worst_group_auroc": gap_stat(
            both,
            lambda: float(np.min(by_group.loc[both, "auroc"].to_numpy(dtype=float))),
            lambda mem: reps_of("auroc", mem).min(axis=1),
        ),
    }
    for name, stat in gaps.items():
        rows.append(_row(base, boot, name, stat, group="all", **fields))
    return rows


def evaluate_fairness(run_dirs: Sequence[Path], config: EvalFairConfig, *, progress: Progress = None) -> pd.DataFrame:
    """Per-group test metrics and fairness gaps of each run, for each attribute in ``config.attributes``.

    Hard predictions use the threshold of ``config.threshold_rule`` chosen on **validation** (read from
    ``threshold.json``; if the rule is not stored, chosen on ``predictions_val.csv``), never on test: a
    stay is predicted positive when its score is at or above it.

    Per group (``group=<value>``; an empty value is the group ``unknown``): ``prevalence``, ``auroc``,
    ``auprc``, ``tpr``, ``fpr``, ``selection_rate``, each with the group's ``n`` and ``n_pos``;
    ``defined=false`` where the group lacks the class the metric needs (AUROC/AUPRC: both classes).

    Gap rows (``group=all``) on the hard predictions, from the same MetricFrame disaggregation, as
    fairlearn defines them (``between_groups``: max − min) but over the groups where the underlying
    rates are defined — never letting an undefined group drop out silently, as
    ``MetricFrame.difference`` would (tests check equality with fairlearn's own functions):

    * ``demographic_parity_difference``: max − min selection rate (all groups);
    * ``equalized_odds_difference``: max of the TPR and FPR spreads (groups with both classes);
    * ``equal_opportunity_difference``: TPR spread (groups with a positive);
    * ``auroc_gap`` and ``worst_group_auroc``: max − min and min of the group AUROCs (groups with both
      classes).

    A gap with fewer than two such groups is ``defined=false``; ``n``/``n_pos`` count the stays of the
    groups used. Binary and phenotype tasks (per label); length of stay is skipped in this version.
    Intervals: patient-level bootstrap (seed ``config.seed``); a replicate in which a used group loses
    a class is dropped.
    """
    rows: list[dict] = []
    run_dirs = list(run_dirs)
    for i, run_dir in enumerate(run_dirs):
        info: RunInfo = load_run_info(run_dir)
        pred = read_predictions(run_dir, "test")
        source = predictions_path(run_dir, "test")
        spec = task_spec(pred, source)
        if spec.kind == "multiclass":
            log.warning("%s: fairness rows for multiclass tasks are not implemented; skipped", run_dir)
            continue
        thresholds = thresholds_for(run_dir, spec, config.threshold_rule)
        boot = PatientBootstrap(subject_ids(pred, source), config.bootstrap, config.seed)
        base = {**info.row_base(), "missing_rate": _natural_missing_rate(pred), "threshold_rule": config.threshold_rule}
        attrs = {a: _group_labels(pred, a, source) for a in config.attributes}
        for label, label_col, score_col in spec.targets:
            y = pred[label_col].to_numpy(dtype=float)
            s = pred[score_col].to_numpy(dtype=float)
            for attribute, groups in attrs.items():
                rows += _fairness_target(y, s, thresholds[label], groups, boot, base, attribute, label)
        if progress:
            progress("fairness", i + 1, len(run_dirs))
    return to_frame(rows)
