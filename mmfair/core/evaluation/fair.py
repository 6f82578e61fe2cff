"""``eval-fair``: per-group test metrics and fairness gaps of finished runs, as tidy rows.

The coverage rule and the undefined-metric rule are those of :mod:`.scoring`; groups come from
:mod:`.groups`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from threadpoolctl import threadpool_limits

from mmfair.core.config import EvalFairConfig
from mmfair.core.errors import InputFileError
from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.groups import gap_groups, group_labels
from mmfair.core.evaluation.run_folder import (
    RunInfo,
    TaskSpec,
    cohort_mask,
    load_run_info,
    predictions_path,
    presence,
    read_predictions,
    selection_rules,
    subject_ids,
    task_spec,
    thresholds_for,
)
from mmfair.core.evaluation.scoring import ON_ALL, ON_CXR, Progress, Stat, covered, natural_missing_rate, stat_row
from mmfair.core.evaluation.thresholds import choose_threshold, fit_recalibrator
from mmfair.core.evaluation.tidy import HIGHER_IS_BETTER, make_row, to_frame

log = logging.getLogger(__name__)

#: Per-group metrics of ``eval-fair`` (tidy names), in row order.
FAIR_GROUP_METRICS = ("prevalence", "auroc", "auprc", "tpr", "fpr", "ppv", "selection_rate", "brier", "ece")
#: Gap rows (``group=all``) of ``eval-fair``; names outside the tidy schema are emitted once registered there.
FAIR_GAP_METRICS = (
    "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
    "equalized_odds_mean", "tpr_gap", "fpr_gap", "equal_opportunity_difference", "auroc_gap",
    "worst_group_auroc", "es_auc", "ece_gap", "brier_gap",
)  # fmt: skip

_HARD_INPUT = {"tpr", "fpr", "ppv", "selection_rate"}


def threshold_rule_name(config: EvalFairConfig) -> str:
    """The ``threshold_rule`` written in the tidy table: the rule, plus ``+platt``/``+isotonic`` if recalibrated."""
    return config.threshold_rule if config.recalibrate == "none" else f"{config.threshold_rule}+{config.recalibrate}"


def evaluate_fairness(run_dirs: Sequence[Path], config: EvalFairConfig, *, progress: Progress = None) -> pd.DataFrame:
    """Per-group test metrics and fairness gaps of each run, for each attribute in ``config.attributes``.

    Attributes are prediction columns (``race_group``, ``gender``, ``age_group``, ``insurance_group``,
    ``language_group``, ``marital_status``, ``admission_type``, ...), ``has_cxr`` (from ``present_cxr``
    when there is no such column; groups ``0``/``1``), or an intersection of two, ``race_group*gender``
    (groups such as ``BLACK*F``). An empty value is the group ``unknown``.

    Operating point: the threshold of ``config.threshold_rule`` (:mod:`.thresholds`) chosen on
    **validation** — read from ``threshold.json`` or, when the rule is not stored there, chosen on
    ``predictions_val.csv`` — never on test; a stay is predicted positive when its score is at or above
    it. With ``config.recalibrate`` (``platt``/``isotonic``) the scores are first recalibrated by a map
    fitted on validation, the threshold is chosen on the recalibrated validation scores, and rows carry
    ``threshold_rule = "<rule>+<method>"``.

    Per group (``group=<value>``), each with the group's ``n`` and ``n_pos``: ``prevalence``, ``auroc``,
    ``auprc``, ``tpr``, ``fpr``, ``ppv``, ``selection_rate``, ``brier``, ``ece`` (10 equal-width bins,
    :func:`~.metrics.ece`). ``defined=false`` where the group lacks what the metric needs (AUROC/AUPRC:
    both classes; TPR: a positive; FPR: a negative; PPV: a predicted positive) — never 0.

    Gap rows (``group=all``), from the same MetricFrame disaggregation, as fairlearn defines them
    (``between_groups``) but over the groups where the underlying rates are defined — never letting an
    undefined group drop out silently, as ``MetricFrame.difference`` would:

    * ``demographic_parity_difference`` / ``_ratio``: max − min and min / max selection rate (all groups);
    * ``equalized_odds_difference``: the larger of ``tpr_gap`` and ``fpr_gap``; ``equalized_odds_mean``:
      their mean (fairlearn's ``agg="mean"``); ``tpr_gap`` (unequal sensitivity) and ``fpr_gap``
      (unequal false alarms) themselves (all four over the groups with both classes);
    * ``equal_opportunity_difference``: TPR spread over the groups with a positive;
    * ``auroc_gap``, ``worst_group_auroc``, ``es_auc`` (AUROC / (1 + Σ_g |AUROC − AUROC_g|), the
      overall AUROC being that of all evaluated stays): groups with both classes;
    * ``ece_gap``, ``brier_gap``: max − min over all groups.

    Every gap leaves out the groups that the small-cell rule suppresses on their own account (``n``,
    ``n_pos`` or ``n − n_pos`` below ``config.min_group_size``, :func:`gap_groups`), so a gap is always
    about groups whose cells the report shows (their per-group rows are still written).
    A gap with fewer than two such groups is ``defined=false``; ``n``/``n_pos`` count the stays of the
    groups used. Gap names not yet in the tidy schema (:data:`~.tidy.HIGHER_IS_BETTER`) are not written.
    Binary and phenotype tasks per label; length of stay one-vs-rest per class (``label=class_<c>``: label
    ``y == c``, score ``score_<c>``, the threshold always chosen on validation) plus the arg-max
    ``accuracy`` per group (``label=all``). Intervals:
    patient-level bootstrap (seed ``config.seed``), the same replicates for groups and gaps, so a gap's
    interval is that of the gap; a replicate in which a used group loses a class is dropped.

    ``config.test_cohort``: ``full`` (every test stay) or ``matched`` (only those with a CXR), recorded in
    ``test_cohort``; thresholds and recalibration still come from the whole validation file (the operating
    point is the model's). A method that scores only the stays with a CXR is evaluated on those
    (``evaluated_on=with_cxr``, :func:`_scorable_stays`); every other row is ``evaluated_on=all``. Each
    selection also gets a ``selected_epoch`` row where ``config.json`` says it.
    """
    # the replicates are many small matrix products: BLAS threads only add overhead (10x on a busy machine)
    with threadpool_limits(limits=1, user_api="blas"):
        return _evaluate_fairness(run_dirs, config, progress)


def _evaluate_fairness(run_dirs: Sequence[Path], config: EvalFairConfig, progress: Progress) -> pd.DataFrame:
    rows: list[dict] = []
    run_dirs = list(run_dirs)
    rule_name = threshold_rule_name(config)
    for i, run_dir in enumerate(run_dirs):
        default_info: RunInfo = load_run_info(run_dir, config.test_cohort)
        # the default checkpoint, then every other selection rule's own test predictions (thresholds and
        # recalibration from that rule's own validation predictions)
        for selection in (None, *selection_rules(run_dir)):
            info = default_info if selection is None else dataclasses.replace(default_info, selection=selection)
            rows += _fairness_rows(Path(run_dir), info, selection, config, rule_name)
            rows += _selected_epoch_rows(info, selection)
        if progress:
            progress("fairness", i + 1, len(run_dirs))
    return to_frame(rows)


def _fairness_rows(run_dir: Path, info: RunInfo, selection: str | None, config: EvalFairConfig,
                   rule_name: str) -> list[dict]:  # fmt: skip
    """The fairness rows of one run under one checkpoint selection (``None``: the default files)."""
    rows: list[dict] = []
    source = predictions_path(run_dir, "test", selection)
    pred = read_predictions(run_dir, "test", selection)
    pred = pred[cohort_mask(pred, config.test_cohort, source)].reset_index(drop=True)
    spec = task_spec(pred, source)
    pred, on = _scorable_stays(pred, spec, source)
    multiclass = spec.kind == "multiclass"
    if multiclass:  # one-vs-rest per class, thresholds always chosen on validation (none are stored)
        class_spec = spec
        pred, spec = _one_vs_rest(pred, class_spec)
        val, _ = _one_vs_rest(read_predictions(run_dir, "val", selection), class_spec)
        pred, thresholds = _recalibrated(run_dir, spec, pred, config, val=val)
    elif config.recalibrate != "none":
        pred, thresholds = _recalibrated(run_dir, spec, pred, config, selection=selection)
    else:
        thresholds = thresholds_for(run_dir, spec, config.threshold_rule, selection)
    boot = PatientBootstrap(subject_ids(pred, source), config.bootstrap, config.seed)
    base = {**info.row_base(), "missing_rate": natural_missing_rate(pred), "threshold_rule": rule_name,
            "evaluated_on": on}  # fmt: skip
    attrs = {a: group_labels(pred, a, source) for a in config.attributes}
    for attribute, groups in attrs.items():
        cache: dict = {}  # group weight slices, shared by the labels of this attribute
        if multiclass:
            rows += _accuracy_by_group(pred, class_spec, groups, boot, base, attribute)
        for label, label_col, score_col in spec.targets:
            y = pred[label_col].to_numpy(dtype=float)
            s = pred[score_col].to_numpy(dtype=float)
            rows += _fairness_target(y, s, thresholds[label], groups, boot, base, attribute, label, cache,
                                     config.min_group_size)
    return rows


def _scorable_stays(pred: pd.DataFrame, spec: TaskSpec, source: object) -> tuple[pd.DataFrame, str]:
    """The cohort's stays and ``all`` when the method scores every one; else, for a method that scores exactly
    the stays with a CXR (``cxr``, ``daft``), those stays and ``with_cxr`` — its fairness rows say so, and are
    never set beside another method's rows on all stays as if they were comparable."""
    cols = list(spec.class_columns) if spec.kind == "multiclass" else [sc for _, _, sc in spec.targets]
    finite = np.isfinite(pred[cols].to_numpy(dtype=float)).all(axis=1)
    if finite.all():
        return pred, ON_ALL
    with_cxr = presence(pred, "cxr", source, required=False)
    if with_cxr.any() and finite[with_cxr].all():
        return pred[with_cxr].reset_index(drop=True), ON_CXR
    log.warning("%s: %d of %d stays have no score (not just stays without a CXR): no fairness rows", source,
                int((~finite).sum()), finite.size)  # fmt: skip
    return pred, ON_ALL


def _selected_epoch_rows(info: RunInfo, selection: str | None) -> list[dict]:
    """``selected_epoch``: the epoch whose weights a selection rule kept (``config.json``'s ``selection_epochs``,
    or ``best_epoch`` for the default), so a report can show where the rules disagree."""
    epochs = info.config.get("selection_epochs") or {}
    epoch = epochs.get(info.selection) if selection is not None else epochs.get("overall", info.config.get("best_epoch"))
    if epoch is None:
        return []
    return [make_row(**info.row_base(), metric="selected_epoch", value=float(epoch), defined=True)]


def _group_frame(y, s, thr: float, groups: pd.Series) -> pd.DataFrame:
    """fairlearn's disaggregation of the score metrics and, at threshold ``thr``, the rate metrics.

    The rate metrics receive hard predictions (``score >= thr``): fairlearn's rates silently count
    ``y_pred == 1`` and would be wrong on probabilities. These are the *point* values; the bootstrap
    replicates are computed by the vectorised functions of :mod:`.metrics` (MetricFrame is far too slow
    row by row for a thousand replicates).
    """

    def hard(y_pred):
        return (np.asarray(y_pred) >= thr).astype(float)

    metrics = {
        "prevalence": lambda y_true, y_pred: M.prevalence(y_true),
        "auroc": lambda y_true, y_pred: M.auroc(y_true, y_pred),
        "auprc": lambda y_true, y_pred: M.auprc(y_true, y_pred),
        "tpr": lambda y_true, y_pred: M.tpr(y_true, hard(y_pred)),
        "fpr": lambda y_true, y_pred: M.fpr(y_true, hard(y_pred)),
        "ppv": lambda y_true, y_pred: M.ppv(y_true, hard(y_pred)),
        "selection_rate": lambda y_true, y_pred: M.selection_rate(y_true, hard(y_pred)),
        "brier": lambda y_true, y_pred: M.brier(y_true, y_pred),
        "ece": lambda y_true, y_pred: M.ece(y_true, y_pred),
    }

    def all_metrics(y_true, y_pred):
        # one metric function returning every value: MetricFrame converts its inputs element by element
        # for each metric function, so one function instead of nine makes the point values ~9x cheaper
        return tuple(fn(y_true, y_pred) for fn in metrics.values())

    frame = MetricFrame(metrics={"all": all_metrics}, y_true=y, y_pred=s, sensitive_features=groups)
    packed = frame.by_group["all"]
    by_group = pd.DataFrame([list(v) for v in packed], index=[str(v) for v in packed.index], columns=list(metrics))
    return by_group


def _metric_reps(name: str, y, s, hard, w) -> np.ndarray:
    if name == "prevalence":
        return M.prevalence(y, w)
    fn = getattr(M, name)
    return fn(y, hard if name in _HARD_INPUT else s, w)


@dataclass
class _ScoredTarget:
    """One label's scored stays under one attribute: labels, scores, hard predictions at the threshold, groups,
    bootstrap weights, fairlearn's per-group point values and counts; ``reps`` collects the group replicates."""

    y: np.ndarray
    s: np.ndarray
    hard: np.ndarray
    g: np.ndarray
    w: np.ndarray
    by_group: pd.DataFrame
    n_of: dict[str, int]
    pos_of: dict[str, int]
    reps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


def _fairness_target(y, s, thr, groups, boot: PatientBootstrap, base: dict, attribute: str, label: str,
                     weight_cache: dict | None = None, min_group_size: int = 1) -> list[dict]:  # fmt: skip
    """Per-group rows and gap rows of one label and one attribute (see :func:`evaluate_fairness`)."""
    scored = np.isfinite(s)
    all_scored = bool(scored.all())
    if not covered(int(scored.sum()), int(scored.size)):
        log.info("%s %s: too few scored stays for fairness rows", base.get("run_id"), label)
        return []
    y, s, g = y[scored], s[scored], groups[scored]
    by_group = _group_frame(y, s, thr, pd.Series(g, name=attribute))
    counts = pd.DataFrame({"g": g, "y": y}).groupby("g")["y"].agg(["size", "sum"])
    target = _ScoredTarget(
        y, s, (s >= thr).astype(float),  # positive at or above the validation threshold (roc_curve's convention)
        g, boot.weights if all_scored else boot.weights[:, scored], by_group,
        counts["size"].reindex(by_group.index).astype(int).to_dict(),
        counts["sum"].reindex(by_group.index).astype(int).to_dict(),
    )  # fmt: skip
    fields = {"label": label, "attribute": attribute}
    rows = _per_group_rows(target, boot, base, fields, weight_cache if all_scored else None)
    return rows + _gap_rows(target, boot, base, fields, min_group_size)


def _per_group_rows(t: _ScoredTarget, boot: PatientBootstrap, base: dict, fields: dict,
                    weight_cache: dict | None) -> list[dict]:  # fmt: skip
    """The :data:`FAIR_GROUP_METRICS` rows of every group (replicates kept in ``t.reps`` for the gaps)."""
    rows: list[dict] = []
    for grp in list(t.by_group.index):
        m = t.g == grp
        ranked: dict[str, np.ndarray] = {}
        wg = None
        if boot.n_boot:
            key = (fields["attribute"], grp)
            if weight_cache is not None and key in weight_cache:
                wg = weight_cache[key]
            else:
                wg = t.w[:, m]
                if weight_cache is not None:
                    weight_cache[key] = wg
            ranked = dict(zip(("auroc", "auprc"), M.auroc_auprc(t.y[m], t.s[m], wg)))  # one sort for both
        for name in FAIR_GROUP_METRICS:
            value = float(t.by_group.loc[grp, name])
            if not boot.n_boot:
                values = np.empty(0)
            elif name in ranked:
                values = ranked[name]
            else:
                values = _metric_reps(name, t.y[m], t.s[m], t.hard[m], wg)
            t.reps[(name, grp)] = values
            stat = Stat(value, values, t.n_of[grp], t.pos_of[grp], bool(np.isfinite(value)))
            rows.append(stat_row(base, boot, name, stat, group=grp, **fields))
    return rows


def _gap_rows(t: _ScoredTarget, boot: PatientBootstrap, base: dict, fields: dict, min_group_size: int) -> list[dict]:
    """The :data:`FAIR_GAP_METRICS` rows (``group=all``) over the groups :func:`gap_groups` keeps."""
    # gaps use only the groups whose cells the report may show (small-cell rule, primary criterion): a
    # group of a handful of stays would decide a max − min gap by noise alone (see gap_groups)
    eligible = gap_groups(list(t.by_group.index), t.n_of, t.pos_of, min_group_size)
    has_pos = [grp for grp in eligible if t.pos_of[grp] > 0]
    both = [grp for grp in has_pos if t.n_of[grp] - t.pos_of[grp] > 0]
    overall_auroc = M.auroc(t.y, t.s)
    overall_reps = M.auroc(t.y, t.s, t.w) if boot.n_boot and both else np.empty(0)

    def point(metric: str, members: list[str]) -> np.ndarray:
        return t.by_group.loc[members, metric].to_numpy(dtype=float)

    def replicates(metric: str, members: list[str]) -> np.ndarray:
        """``[B, G]`` replicate values of a group metric for the groups in ``members``."""
        return np.stack([t.reps[(metric, m)] for m in members], axis=1)

    # name -> (groups used, statistic of per-group values {metric: [..., G]} and overall AUROC)
    specs: dict[str, tuple[list[str], tuple[str, ...], Callable]] = {
        "demographic_parity_difference": (eligible, ("selection_rate",), lambda v, a: M.group_difference(v[0])),
        "demographic_parity_ratio": (eligible, ("selection_rate",), lambda v, a: M.group_ratio(v[0])),
        "equalized_odds_difference": (both, ("tpr", "fpr"), lambda v, a: M.equalized_odds(v[0], v[1], "worst_case")),
        "equalized_odds_mean": (both, ("tpr", "fpr"), lambda v, a: M.equalized_odds(v[0], v[1], "mean")),
        "tpr_gap": (both, ("tpr",), lambda v, a: M.group_difference(v[0])),
        "fpr_gap": (both, ("fpr",), lambda v, a: M.group_difference(v[0])),
        "equal_opportunity_difference": (has_pos, ("tpr",), lambda v, a: M.group_difference(v[0])),
        "auroc_gap": (both, ("auroc",), lambda v, a: M.group_difference(v[0])),
        "worst_group_auroc": (both, ("auroc",), lambda v, a: M.group_min(v[0])),
        "es_auc": (both, ("auroc",), lambda v, a: M.es_auc(a, v[0])),
        "ece_gap": (eligible, ("ece",), lambda v, a: M.group_difference(v[0])),
        "brier_gap": (eligible, ("brier",), lambda v, a: M.group_difference(v[0])),
    }  # fmt: skip
    rows: list[dict] = []
    for name in FAIR_GAP_METRICS:
        if name not in HIGHER_IS_BETTER:  # not yet in the tidy schema (DESIGN §3.4): not written
            continue
        members, inputs, fn = specs[name]
        n = sum(t.n_of[m] for m in members)
        n_pos = sum(t.pos_of[m] for m in members)
        if len(members) < 2:
            stat = Stat(float("nan"), np.full(boot.n_boot, np.nan), n, n_pos, False)
        else:
            value = float(fn([point(k, members) for k in inputs], overall_auroc))
            r = fn([replicates(k, members) for k in inputs], overall_reps) if boot.n_boot else np.empty(0)
            stat = Stat(value, np.asarray(r, dtype=float), n, n_pos, bool(np.isfinite(value)))
        rows.append(stat_row(base, boot, name, stat, group="all", **fields))
    return rows


def _one_vs_rest(pred: pd.DataFrame, spec: TaskSpec) -> tuple[pd.DataFrame, TaskSpec]:
    """Length of stay as one binary target per class ``class_<c>``: label ``y == c``, score ``score_<c>``."""
    cols: dict[str, np.ndarray] = {}
    targets = []
    y = pd.to_numeric(pred["label"], errors="coerce").to_numpy()
    for col in spec.class_columns:
        c = int(col.rsplit("_", 1)[1])
        cols[f"label_class_{c}"] = (y == c).astype(int)
        cols[f"score_class_{c}"] = pred[col].to_numpy(dtype=float)
        targets.append((f"class_{c}", f"label_class_{c}", f"score_class_{c}"))
    return pred.assign(**cols), TaskSpec("multilabel", targets=tuple(targets))


def _recalibrated(run_dir: Path, spec: TaskSpec, pred: pd.DataFrame, config: EvalFairConfig,
                  val: pd.DataFrame | None = None, selection: str | None = None,
                  ) -> tuple[pd.DataFrame, dict[str, float]]:  # fmt: skip
    """Test predictions with recalibrated scores and thresholds chosen on recalibrated validation scores
    (``config.recalibrate == "none"``: the scores as they are, thresholds chosen on validation)."""
    val = read_predictions(run_dir, "val", selection) if val is None else val
    pred = pred.copy()
    thresholds: dict[str, float] = {}
    for label, label_col, score_col in spec.targets:
        yv, sv = val[label_col].to_numpy(dtype=float), val[score_col].to_numpy(dtype=float)
        try:
            calib = fit_recalibrator(yv, sv, config.recalibrate)
        except ValueError as exc:
            raise InputFileError(f"{predictions_path(run_dir, 'val')}: label '{label}': {exc}") from None
        pred[score_col] = calib(pred[score_col].to_numpy(dtype=float))
        t = choose_threshold(yv, calib(sv), config.threshold_rule)
        if not np.isfinite(t):
            raise InputFileError(f"{run_dir}: the '{config.threshold_rule}' threshold for label '{label}' is "
                                 "undefined (validation had one class)")  # fmt: skip
        thresholds[label] = t
    return pred, thresholds


def _accuracy_by_group(pred: pd.DataFrame, spec: TaskSpec, groups, boot: PatientBootstrap, base: dict,
                       attribute: str) -> list[dict]:  # fmt: skip
    """Arg-max accuracy of a multiclass task per group (``label=all``), with replicates."""
    scores = pred[list(spec.class_columns)].to_numpy(dtype=float)
    scored = np.isfinite(scores).all(axis=1)
    if not covered(int(scored.sum()), scored.size):
        return []
    y = pd.to_numeric(pred["label"], errors="coerce").to_numpy()[scored].astype(int)
    yhat = np.argmax(scores[scored], axis=1)
    g, w = groups[scored], boot.weights[:, scored]
    k = len(spec.class_columns)
    rows = []
    for grp in sorted(set(g)):
        m = g == grp
        value = float(M.accuracy_from_confusion(M.confusion(y[m], yhat[m], k))[0])
        reps = M.accuracy_from_confusion(M.confusion(y[m], yhat[m], k, w[:, m])) if boot.n_boot else np.empty(0)
        stat = Stat(value, reps, int(m.sum()), None, bool(np.isfinite(value)))
        rows.append(stat_row(base, boot, "accuracy", stat, label="all", attribute=attribute, group=grp))
    return rows


