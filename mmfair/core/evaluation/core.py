"""The one evaluation core: clean test metrics, missing-CXR scenarios and fairness, as tidy rows.

All three entry points read finished run folders (DESIGN §3.3), score **test** predictions only, attach
patient-level bootstrap intervals (:mod:`.bootstrap`) and return rows of the tidy schema (:mod:`.tidy`).

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
the core and ``defined=false`` with an empty value in the table; it is never 0. Gaps are computed over
the groups where the underlying metric is defined, and are themselves undefined with fewer than two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from threadpoolctl import threadpool_limits

from mmfair.core.config import EvalFairConfig, EvalMissingConfig
from mmfair.core.errors import InputFileError
from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap, percentile_ci
from mmfair.core.evaluation.cost import cost_rows
from mmfair.core.evaluation.runs import (
    RunInfo,
    TaskSpec,
    check_aligned,
    cohort_mask,
    load_run_info,
    presence,
    predictions_path,
    read_predictions,
    selection_rules,
    subject_ids,
    task_spec,
    thresholds_for,
)
from mmfair.core.evaluation.scenarios import EHR_MECHANISMS, StayContext, draw_seed, get_scenario, level_text
from mmfair.core.evaluation.thresholds import choose_threshold, fit_recalibrator
from mmfair.core.evaluation.tidy import DEFAULTS, HIGHER_IS_BETTER, make_row, to_frame

log = logging.getLogger(__name__)

#: ``evaluated_on`` values (tidy schema): every stay of the test cohort, the stays with a CXR, the stays
#: shared by two compared methods.
ON_ALL, ON_CXR, ON_COMMON = "all", "with_cxr", "common"
#: The group name given to an empty attribute value.
MISSING_GROUP = "unknown"

_MISSING_ATTRIBUTE = "{0}: sensitive attribute column '{1}' is missing"

Progress = Callable[[str, int, int], None] | None
#: ``predict_fn(run_dir, split, present_override)``; EHR perturbation scenarios also pass the keyword
#: ``ehr_transform`` (see :func:`mmfair.core.training.runs.predict`), so other predict_fns need not take it.
PredictFn = Callable[..., pd.DataFrame]

_SCORE_METRICS = {"auroc": M.auroc, "auprc": M.auprc, "brier": M.brier}
#: ``kappa`` is Cohen's unweighted kappa; ``kappa_linear`` the linear-weighted one that training selects on.
_CLASS_METRICS = {"accuracy": M.accuracy_from_confusion, "kappa": M.kappa_from_confusion,
                  "kappa_linear": M.kappa_linear_from_confusion, "macro_f1": M.macro_f1_from_confusion}  # fmt: skip


@dataclass
class _Stat:
    value: float
    reps: np.ndarray
    n: int | None
    n_pos: int | None
    defined: bool


#: Private key of a row holding its replicate values until :func:`_pool_draws` has used them (``to_frame``
#: keeps the tidy columns only, so it never reaches a table).
_REPS = "_reps"


def _row(base: dict, boot: PatientBootstrap, metric: str, stat: _Stat, **fields) -> dict:
    ci = boot.ci(stat.reps) if stat.defined and boot.n_boot else None
    if ci is not None and ci.n_dropped:
        log.debug("%s %s: %d of %d replicates undefined and dropped", base.get("run_id"), metric, ci.n_dropped, boot.n_boot)
    row = make_row(
        **base, **fields, metric=metric, value=stat.value, n=stat.n, n_pos=stat.n_pos, defined=stat.defined,
        ci_low=ci.low if ci else None, ci_high=ci.high if ci else None,
    )  # fmt: skip
    if ci is not None:
        row[_REPS] = stat.reps
    return row


def _covered(n: int, n_eval: int) -> bool:
    """A method covers the evaluated stays when it scored every one of them (see the module docstring)."""
    return n > 0 and n == n_eval


def _score_target(y, s, eval_mask, boot: PatientBootstrap, names: Sequence[str]) -> dict[str, _Stat]:
    """Threshold-free metrics of one label on the evaluated stays, with replicates (``n``: the evaluated stays)."""
    scored = eval_mask & np.isfinite(s)
    n_eval, n = int(eval_mask.sum()), int(scored.sum())
    ok = _covered(n, n_eval)
    yy, ss = y[scored], s[scored]
    w = boot.weights[:, scored]
    n_pos = int(np.nansum(y[eval_mask]))
    out = {}
    for name in names:
        fn = _SCORE_METRICS[name]
        value = fn(yy, ss) if ok else float("nan")
        reps = fn(yy, ss, w) if ok and boot.n_boot else np.full(boot.n_boot, np.nan)
        out[name] = _Stat(value, reps, n_eval, n_pos, ok and bool(np.isfinite(value)))
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
        out[name] = _Stat(value, reps, n_eval, None, ok and bool(np.isfinite(value)))
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


def evaluated_sets(pred: pd.DataFrame, source: object = "predictions") -> dict[str, np.ndarray]:
    """The fixed sets of evaluated stays: ``all`` and, where ``present_cxr`` is known and some stay has a CXR,
    ``with_cxr``."""
    out = {ON_ALL: np.ones(len(pred), dtype=bool)}
    if "present_cxr" in pred.columns:
        with_cxr = presence(pred, "cxr", source)
        if with_cxr.any():
            out[ON_CXR] = with_cxr
    return out


def evaluate_clean(
    run_dirs: Sequence[Path], *, bootstrap: int = 1000, seed: int = 0, progress: Progress = None
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
    * length of stay: ``accuracy``, ``kappa`` (Cohen's, unweighted), ``kappa_linear`` (linear weights, the
      training selection criterion), ``macro_f1`` on the arg-max class;
    * cost rows ``n_params``, ``train_seconds`` (sum over epochs), ``peak_memory_mb`` (max) where known.

    Two sets of evaluated stays, one row each (``evaluated_on``, ``n`` = their number): ``all`` (every test
    stay; undefined for a method that cannot score them all) and ``with_cxr`` (the test stays with a CXR,
    which every method scores; written when the predictions say which stays have one) — the two fixed
    leaderboards of the report. ``missing_rate`` is the natural share of evaluated test stays without a CXR.

    Every other selection rule of a run (a ``predictions_test_<rule>.csv``, see
    :func:`~.runs.selection_rules`) is scored the same way, its rows tagged ``selection=<rule>``; the
    cost rows belong to the default selection only.
    """
    rows: list[dict] = []
    run_dirs = list(run_dirs)
    for i, run_dir in enumerate(run_dirs):
        default_info = load_run_info(run_dir)
        for selection in (None, *selection_rules(run_dir)):
            info = default_info if selection is None else dataclasses.replace(default_info, selection=selection)
            pred = read_predictions(run_dir, "test", selection)
            source = predictions_path(run_dir, "test", selection)
            spec = task_spec(pred, source)
            boot = PatientBootstrap(subject_ids(pred, source), bootstrap, seed)
            names = ("auroc", "auprc", "brier")
            for on, mask in evaluated_sets(pred, source).items():
                base = {**info.row_base(), "missing_rate": _natural_missing_rate(pred[mask]), "evaluated_on": on}
                rows += _task_rows(pred, spec, mask, boot, base, names)
            if selection is None:
                rows += cost_rows(info)
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


#: Gap rows of ``eval-missing`` per attribute (``group=all``), each over the groups where its rates are defined.
MISSING_GAP_METRICS = ("auroc_gap", "equalized_odds_difference", "demographic_parity_difference")


def _missing_group_rows(scored: pd.DataFrame, spec: TaskSpec, evaluated: np.ndarray, lacking: np.ndarray,
                        boot: PatientBootstrap, base: dict, levels_by_attribute: dict[str, np.ndarray],
                        thresholds: dict[str, float], min_group_size: int = 1) -> list[dict]:  # fmt: skip
    """Per-group ``auroc`` rows and the gap rows (group ``all``) of one scenario draw.

    Groups are those with an evaluated stay; each group follows the coverage rule on its own evaluated
    stays, and its row's ``missing_rate`` is the share of *its* evaluated stays without the modality
    (``lacking``), so a structured mechanism's per-group removal can be read off. The gaps, with
    eval-fair's definitions (``evaluate_fairness``) on the stays the method scored, at the run's
    validation threshold (``thresholds``: it stays where it was chosen, as in a deployed model):

    * ``auroc_gap``: max − min AUROC over the groups where it is defined;
    * ``equalized_odds_difference``: the larger of the TPR and FPR spreads over the covered groups
      with both classes;
    * ``demographic_parity_difference``: the selection-rate spread over the covered groups.

    Every gap leaves out the groups that the small-cell rule suppresses on their own account (evaluated
    ``n``, ``n_pos`` or ``n − n_pos`` below ``min_group_size``, :func:`gap_groups`, as eval-fair), so a
    handful of stays never decides a gap or its robustness summary; their per-group rows are still
    written (the report suppresses them). Fewer than two such groups: undefined. A replicate in which a
    used group's value is undefined is dropped.
    """
    rows: list[dict] = []
    if spec.kind == "multiclass":
        return rows
    for attribute, levels in levels_by_attribute.items():
        groups = sorted(set(levels[evaluated].tolist()))
        for label, label_col, score_col in spec.targets:
            y = scored[label_col].to_numpy(dtype=float)
            s = scored[score_col].to_numpy(dtype=float)
            hard = (s >= thresholds[label]).astype(float)  # positive at or above the threshold, as eval-fair
            auroc, rates = {}, {}
            n_of = {g: int((evaluated & (levels == g)).sum()) for g in groups}
            pos_of = {g: int(np.nansum(y[evaluated & (levels == g)])) for g in groups}
            eligible = gap_groups(groups, n_of, pos_of, min_group_size)
            for g in groups:
                in_group = evaluated & (levels == g)
                auroc[g] = _score_target(y, s, in_group, boot, ("auroc",))["auroc"]
                n_group = int(in_group.sum())
                group_rate = float((in_group & lacking).sum()) / n_group if n_group else float("nan")
                rows.append(_row({**base, "missing_rate": group_rate}, boot, "auroc", auroc[g], label=label,
                                 attribute=attribute, group=g))  # fmt: skip
                scored_in_group = in_group & np.isfinite(s)
                rates[g] = _group_rates(y, hard, scored_in_group, _covered(int(scored_in_group.sum()), n_group), boot)
            for name in MISSING_GAP_METRICS:
                gap = _missing_gap(name, eligible, auroc, rates, boot)
                rows.append(_row(base, boot, name, gap, label=label, attribute=attribute, group="all"))
    return rows


@dataclass
class _GroupRates:
    """Threshold rates of one group's scored evaluated stays (``covered``: enough of them were scored)."""

    covered: bool
    n: int
    n_pos: int
    values: dict[str, float]
    reps: dict[str, np.ndarray]


def _group_rates(y, hard, mask, covered: bool, boot: PatientBootstrap) -> _GroupRates:
    yy, hh = y[mask], hard[mask]
    w = boot.weights[:, mask]
    fns = {"tpr": M.tpr, "fpr": M.fpr, "selection_rate": M.selection_rate}
    values = {k: (float(fn(yy, hh)) if covered else float("nan")) for k, fn in fns.items()}
    reps = {k: (fn(yy, hh, w) if covered and boot.n_boot else np.full(boot.n_boot, np.nan)) for k, fn in fns.items()}
    return _GroupRates(covered, int(mask.sum()), int(yy.sum()), values, reps)


def _missing_gap(name: str, groups: list, auroc: dict, rates: dict, boot: PatientBootstrap) -> _Stat:
    if name == "auroc_gap":
        used = [g for g in groups if auroc[g].defined]
        n, n_pos = sum(auroc[g].n or 0 for g in used), sum(auroc[g].n_pos or 0 for g in used)
        values = [np.array([auroc[g].value for g in used])]
        reps = [np.stack([auroc[g].reps for g in used], axis=1) if boot.n_boot and used else None]
        fn = M.group_difference
    else:
        if name == "equalized_odds_difference":
            used = [g for g in groups if rates[g].covered and 0 < rates[g].n_pos < rates[g].n]
            inputs = ("tpr", "fpr")
            fn = lambda t, f: M.equalized_odds(t, f, "worst_case")  # noqa: E731
        else:
            used = [g for g in groups if rates[g].covered and rates[g].n > 0]
            inputs = ("selection_rate",)
            fn = M.group_difference
        n, n_pos = sum(rates[g].n for g in used), sum(rates[g].n_pos for g in used)
        values = [np.array([rates[g].values[k] for g in used]) for k in inputs]
        reps = [np.stack([rates[g].reps[k] for g in used], axis=1) if boot.n_boot and used else None for k in inputs]
    if len(used) < 2:
        return _Stat(float("nan"), np.full(boot.n_boot, np.nan), n, n_pos, False)
    value = float(fn(*values))
    r = np.asarray(fn(*reps), dtype=float) if boot.n_boot else np.empty(0)
    return _Stat(value, r, n, n_pos, bool(np.isfinite(value)))


def evaluate_missing(
    run_dirs: Sequence[Path], config: EvalMissingConfig, predict_fn: PredictFn, *, progress: Progress = None
) -> pd.DataFrame:
    """Test metrics when a modality goes missing under the scenario ``config.mechanism``.

    Scenarios (:mod:`~mmfair.core.evaluation.scenarios`, registry ``SCENARIOS``): ``mcar`` (a
    label-stratified random share of the stays that have the modality), ``group`` (per-group shares,
    ``config.by`` and ``config.level_rates``), ``label`` (per-label shares: missing not at random) and
    ``natural`` (the full test fold as it is); ``ehr_group``, ``ehr_last_hours`` and ``ehr_noise``
    perturb the raw EHR values of a label-stratified share of the stays (``predict_fn(run_dir, "test",
    {}, ehr_transform=...)``; ``missing_rate`` is the share perturbed). For each run, each point of the scenario's grid (the
    clean point — rate 0 — always included) and each draw (one at the clean point), the scenario gives
    a keep-mask and the evaluated stays; the run is re-scored with
    ``predict_fn(run_dir, "test", {modality: keep})`` (``keep`` aligned with the rows of
    ``predictions_test.csv``; results are cached per run and mask within the call). Synthetic mechanisms
    evaluate the stays that had the modality; ``natural`` evaluates every test stay.

    Rows: ``scenario`` = the mechanism, ``scenario_params`` JSON (modality, the point's requested rate or
    per-level profile ``rates`` with ``by``, the stratification column), ``missing_rate`` = the share of
    evaluated stays without the modality after removal (the final share), ``draw``, ``draw_seed`` (from
    ``config.seed``, the point and the draw: reproducible and shared by runs on the same fold; empty
    for ``natural``), metrics ``auroc`` and ``auprc`` (length of stay: ``accuracy``, ``kappa``,
    ``macro_f1``) with intervals from the patient-level bootstrap (seed ``config.seed``) and the
    coverage rule of this module. With ``config.attributes`` (for ``group``: its ``by`` attribute by
    default), also per-group ``auroc`` rows (``attribute``/``group``, on the group's evaluated stays,
    ``missing_rate`` = the group's own final share without the modality) and the gap rows
    ``auroc_gap``, ``equalized_odds_difference`` and ``demographic_parity_difference`` (``group=all``,
    ``missing_rate`` = the overall share; see :func:`_missing_group_rows`; the threshold ones at the
    run's ``val-youden`` threshold from validation), per label, for every point and draw — so each
    gap's curve over the missing rate is in the table too, and summarised like AUROC's. Gaps leave out
    the groups below ``config.min_group_size`` (:func:`gap_groups`).

    Which stays (issue 11): every point of a curve scores the same evaluated stays, and a method that
    cannot score all of them (a CXR-only model after removal) is undefined there. Rows say which stays
    (``evaluated_on``, ``test_cohort``: :func:`_scored_stays`) and what was removed (``scenario_params``
    ``removed``, ``removed_share``; a requested rate that removes nothing or far from itself warns). With
    several draws, every draw's interval pools the bootstrap replicates of all draws of its point
    (:func:`_pool_draws`), so it includes the randomness of the removal.
    """
    modality = "ehr" if config.mechanism in EHR_MECHANISMS else config.modality
    scenario = get_scenario(config.mechanism)
    points = scenario.points(config)
    rows: list[dict] = []
    cache: dict[tuple, pd.DataFrame] = {}
    run_dirs = list(run_dirs)
    total = len(run_dirs) * sum(p.draws for p in points)
    done = 0
    warned: set = set()
    for run_dir in run_dirs:
        info = load_run_info(run_dir, config.test_cohort)
        pred = read_predictions(run_dir, "test")
        source = predictions_path(run_dir, "test")
        spec = task_spec(pred, source)
        in_cohort = cohort_mask(pred, config.test_cohort, source)  # matched: only stays with a CXR
        if modality == "static" and "present_static" not in pred.columns:
            present = np.zeros(len(pred), dtype=bool)  # a run without the static modality: nothing to remove
        else:
            present = presence(pred, modality, source)
        strata, strata_col = _strata(pred, spec)
        ctx = StayContext(pred, present, strata, strata_col, str(source))
        boot = PatientBootstrap(subject_ids(pred, source), config.bootstrap, config.seed)
        names = ("auroc", "auprc")
        levels_by_attribute = {}
        for attribute in config.group_attributes():
            if attribute not in pred.columns:
                raise InputFileError(_MISSING_ATTRIBUTE.format(source, attribute))
            levels_by_attribute[attribute] = level_text(pred[attribute].to_numpy())
        # the operating point of the threshold gaps: the run's validation threshold, never re-chosen on test
        needs_threshold = levels_by_attribute and spec.kind != "multiclass"
        thresholds = thresholds_for(run_dir, spec, DEFAULTS["threshold_rule"]) if needs_threshold else {}
        for point in points:
            point_rows: list[dict] = []
            for draw in range(point.draws):
                dseed = None if point.seed_key is None else draw_seed(config.seed, point.seed_key, draw)
                removal = scenario.apply(point, ctx, dseed)
                keep = removal.keep
                transform = removal.ehr_transform
                if transform is None:
                    key = _mask_key(run_dir, "test", modality, keep)
                else:
                    key = (str(Path(run_dir).resolve()), "test", "ehr_transform", transform.key())
                if key not in cache:
                    if transform is None:
                        out = predict_fn(Path(run_dir), "test", {modality: keep.copy()})
                    else:  # the stays keep the EHR; its raw values are perturbed before imputation
                        out = predict_fn(Path(run_dir), "test", {}, ehr_transform=transform)
                    check_aligned(out, pred, Path(run_dir), "test")
                    cache[key] = out
                scored = cache[key].copy()
                for _, label_col, _ in spec.targets:  # labels always from the saved predictions
                    scored[label_col] = pred[label_col].to_numpy()
                if spec.kind == "multiclass":
                    scored["label"] = pred["label"].to_numpy()
                evaluated = removal.evaluated & in_cohort
                n_eval = int(evaluated.sum())
                lacking = ~(present & keep)
                without = int((evaluated & lacking).sum())
                realised = _realised_removal(removal, present, keep, evaluated)
                _warn_realised(point.params.get("requested_rate"), realised, warned)
                params = {"modality": modality, **point.params, **removal.params, **realised}
                base = {
                    **info.row_base(), "scenario": scenario.name, "scenario_params": json.dumps(params, sort_keys=True),
                    "missing_rate": without / n_eval if n_eval else float("nan"), "draw": draw, "draw_seed": dseed,
                    **_scored_stays(evaluated, in_cohort, present, modality, config.test_cohort),
                }  # fmt: skip
                point_rows += _task_rows(scored, spec, evaluated, boot, base, names)
                point_rows += _missing_group_rows(scored, spec, evaluated, lacking, boot, base, levels_by_attribute,
                                                  thresholds, config.min_group_size)  # fmt: skip
                done += 1
                if progress:
                    progress("missing-modality scenarios", done, total)
            rows += _pool_draws(point_rows)
    return to_frame(rows)


def _scored_stays(evaluated, in_cohort, present, modality: str, test_cohort: str) -> dict[str, str]:
    """``evaluated_on`` and ``test_cohort`` of a scenario's rows, saying which stays were scored.

    A synthetic removal of the CXR evaluates the stays that had one: that *is* the matched cohort, so the
    rows say ``test_cohort=matched`` and ``evaluated_on=with_cxr`` whatever cohort was asked for (issue
    11: an MCAR row must not claim the full fold while scoring CXR stays only). ``natural`` and the EHR
    perturbations evaluate every stay of the cohort (``all``).
    """
    if bool(np.array_equal(evaluated, in_cohort)):
        return {"evaluated_on": ON_ALL, "test_cohort": test_cohort}
    if modality == "cxr" and bool(np.array_equal(evaluated, in_cohort & present)):
        return {"evaluated_on": ON_CXR, "test_cohort": "matched"}
    # removing the EHR or static modality evaluates the stays that have it (in practice every stay)
    return {"evaluated_on": ON_ALL, "test_cohort": test_cohort}


def _realised_removal(removal, present, keep, evaluated) -> dict[str, object]:
    """What a draw actually removed: ``removed`` stays and ``removed_share`` of the evaluated stays that had
    the modality (EHR perturbations: the stays perturbed, as a share of the evaluated stays)."""
    if removal.ehr_transform is not None:
        hit = np.asarray(removal.ehr_transform.stays, dtype=bool) & evaluated
        pool = int(evaluated.sum())
    else:
        hit = present & ~keep & evaluated
        pool = int((present & evaluated).sum())
    removed = int(hit.sum())
    return {"removed": removed, "removed_share": round(removed / pool, 6) if pool else None}


#: A realised share further than this from the requested rate (absolute, or relative to it) is warned about.
_REALISED_TOLERANCE = (0.01, 0.1)


def _warn_realised(requested: float | None, realised: dict, warned: set) -> None:
    """Warn once per (rate, count) when a requested rate removes nothing or far from what was asked."""
    share = realised["removed_share"]
    if requested is None or requested <= 0 or share is None:
        return
    key = (requested, realised["removed"])
    far = abs(share - requested) > max(_REALISED_TOLERANCE[0], _REALISED_TOLERANCE[1] * requested)
    if key in warned or not (realised["removed"] == 0 or far):
        return
    warned.add(key)
    what = "rounds to nothing: no stay loses it" if realised["removed"] == 0 else f"removes {share:.2%} of the stays"
    log.warning("requested missing rate %g %s (%d removed); the rows carry the realised count and share "
                "(scenario_params removed, removed_share)", requested, what, realised["removed"])


def _pool_draws(rows: list[dict]) -> list[dict]:
    """One point's rows over its draws, with intervals that include the randomness of the removal.

    A row's ``ci_low``/``ci_high`` become the percentile interval of the bootstrap replicates pooled over
    every draw of the point (a mixture over removals and resamples) when each draw's row is defined; a
    point with one draw keeps its own bootstrap interval.
    """
    by_key: dict[tuple, list[dict]] = {}
    for r in rows:
        by_key.setdefault((r["metric"], r["label"], r["attribute"], r["group"]), []).append(r)
    for same in by_key.values():
        if len(same) < 2 or not all(_REPS in r for r in same):
            continue
        ci = percentile_ci(np.concatenate([np.asarray(r[_REPS], dtype=float) for r in same]))
        for r in same:
            r["ci_low"], r["ci_high"] = ci.low, ci.high
    return rows


# --------------------------------------------------------------------------------------------------
# fairness


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


#: Per-group metrics of ``eval-fair`` (tidy names), in row order.
FAIR_GROUP_METRICS = ("prevalence", "auroc", "auprc", "tpr", "fpr", "ppv", "selection_rate", "brier", "ece")
#: Gap rows (``group=all``) of ``eval-fair``; names outside the tidy schema are emitted once registered there.
FAIR_GAP_METRICS = (
    "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
    "equalized_odds_mean", "tpr_gap", "fpr_gap", "equal_opportunity_difference", "auroc_gap",
    "worst_group_auroc", "es_auc", "ece_gap", "brier_gap",
)  # fmt: skip
#: Separator of an intersection of two attributes (``race_group*gender``) and of its group values.
INTERSECTION = "*"
#: Attribute computed from ``present_cxr`` when the predictions have no ``has_cxr`` column.
HAS_CXR = "has_cxr"

_SCORE_INPUT = {"auroc", "auprc", "brier", "ece"}
_HARD_INPUT = {"tpr", "fpr", "ppv", "selection_rate"}


def _one_attribute(pred: pd.DataFrame, attribute: str, source: object) -> np.ndarray:
    if attribute not in pred.columns and attribute == HAS_CXR:
        return presence(pred, "cxr", source).astype(int).astype(str).astype(object)
    if attribute not in pred.columns:
        raise InputFileError(_MISSING_ATTRIBUTE.format(source, attribute))
    col = pred[attribute]
    return np.asarray([MISSING_GROUP if pd.isna(v) or str(v) == "" else _plain(v) for v in col], dtype=object)


def _plain(v: object) -> str:
    """A group value as text; ``1.0`` read from a CSV column with gaps is ``1``."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _group_labels(pred: pd.DataFrame, attribute: str, source: object) -> np.ndarray:
    """Group of each stay for an attribute or an intersection ``a*b`` (groups ``A*B``); empty → ``unknown``."""
    parts = attribute.split(INTERSECTION)
    labels = [_one_attribute(pred, a, source) for a in parts]
    if len(labels) == 1:
        return labels[0]
    return np.asarray([INTERSECTION.join(t) for t in zip(*labels)], dtype=object)


def _metric_reps(name: str, y, s, hard, w) -> np.ndarray:
    if name == "prevalence":
        return M.prevalence(y, w)
    fn = getattr(M, name)
    return fn(y, hard if name in _HARD_INPUT else s, w)


def _fairness_target(y, s, thr, groups, boot: PatientBootstrap, base: dict, attribute: str, label: str,
                     weight_cache: dict | None = None, min_group_size: int = 1) -> list[dict]:  # fmt: skip
    """Per-group rows and gap rows of one label and one attribute (see :func:`evaluate_fairness`)."""
    scored = np.isfinite(s)
    n_all = int(scored.size)
    all_scored = bool(scored.all())
    y, s, g = y[scored], s[scored], groups[scored]
    w = boot.weights if all_scored else boot.weights[:, scored]
    hard = (s >= thr).astype(float)  # positive at or above the validation threshold (roc_curve's convention)
    rows: list[dict] = []
    if not _covered(int(scored.sum()), n_all):
        log.info("%s %s: too few scored stays for fairness rows", base.get("run_id"), label)
        return rows
    by_group = _group_frame(y, s, thr, pd.Series(g, name=attribute))
    counts = pd.DataFrame({"g": g, "y": y}).groupby("g")["y"].agg(["size", "sum"])
    n_of = counts["size"].reindex(by_group.index).astype(int).to_dict()
    pos_of = counts["sum"].reindex(by_group.index).astype(int).to_dict()
    groups_sorted = list(by_group.index)
    fields = {"label": label, "attribute": attribute}
    group_reps: dict[tuple[str, str], np.ndarray] = {}
    for grp in groups_sorted:
        n, n_pos = n_of[grp], pos_of[grp]
        m = g == grp
        ranked: dict[str, np.ndarray] = {}
        wg = None
        if boot.n_boot:
            key = (attribute, grp)
            if all_scored and weight_cache is not None and key in weight_cache:
                wg = weight_cache[key]
            else:
                wg = w[:, m]
                if all_scored and weight_cache is not None:
                    weight_cache[key] = wg
            ranked = dict(zip(("auroc", "auprc"), M.auroc_auprc(y[m], s[m], wg)))  # one sort for both
        for name in FAIR_GROUP_METRICS:
            value = float(by_group.loc[grp, name])
            if not boot.n_boot:
                values = np.empty(0)
            elif name in ranked:
                values = ranked[name]
            else:
                values = _metric_reps(name, y[m], s[m], hard[m], wg)
            group_reps[(name, grp)] = values
            stat = _Stat(value, values, n, n_pos, bool(np.isfinite(value)))
            rows.append(_row(base, boot, name, stat, group=grp, **fields))

    # gaps use only the groups whose cells the report may show (small-cell rule, primary criterion): a
    # group of a handful of stays would decide a max − min gap by noise alone (see gap_groups)
    eligible = gap_groups(groups_sorted, n_of, pos_of, min_group_size)
    has_pos = [grp for grp in eligible if pos_of[grp] > 0]
    both = [grp for grp in has_pos if n_of[grp] - pos_of[grp] > 0]
    overall_auroc = M.auroc(y, s)
    overall_reps = M.auroc(y, s, w) if boot.n_boot and both else np.empty(0)

    def point(metric: str, members: list[str]) -> np.ndarray:
        return by_group.loc[members, metric].to_numpy(dtype=float)

    def replicates(metric: str, members: list[str]) -> np.ndarray:
        """``[B, G]`` replicate values of a group metric for the groups in ``members``."""
        return np.stack([group_reps[(metric, m)] for m in members], axis=1)

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
    for name in FAIR_GAP_METRICS:
        if name not in HIGHER_IS_BETTER:  # not yet in the tidy schema (DESIGN §3.4): not written
            continue
        members, inputs, fn = specs[name]
        n = sum(n_of[m] for m in members)
        n_pos = sum(pos_of[m] for m in members)
        if len(members) < 2:
            stat = _Stat(float("nan"), np.full(boot.n_boot, np.nan), n, n_pos, False)
        else:
            value = float(fn([point(k, members) for k in inputs], overall_auroc))
            r = fn([replicates(k, members) for k in inputs], overall_reps) if boot.n_boot else np.empty(0)
            stat = _Stat(value, np.asarray(r, dtype=float), n, n_pos, bool(np.isfinite(value)))
        rows.append(_row(base, boot, name, stat, group="all", **fields))
    return rows


def gap_groups(groups: Sequence[str], n_of: dict, pos_of: dict, min_group_size: int) -> list[str]:
    """The groups a fairness gap is computed over: those with ``n``, ``n_pos`` and ``n − n_pos`` all at least
    ``min_group_size`` — exactly the cells the small-cell rule (DESIGN §3.4) does not suppress on its own
    account. Groups hidden only as *complementary* cells are large enough and stay in. With
    ``min_group_size=1`` this is every group with both classes."""
    return [g for g in groups if min(n_of[g], pos_of[g], n_of[g] - pos_of[g]) >= min_group_size]


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
    if not _covered(int(scored.sum()), scored.size):
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
        stat = _Stat(value, reps, int(m.sum()), None, bool(np.isfinite(value)))
        rows.append(_row(base, boot, "accuracy", stat, label="all", attribute=attribute, group=grp))
    return rows


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
    base = {**info.row_base(), "missing_rate": _natural_missing_rate(pred), "threshold_rule": rule_name,
            "evaluated_on": on}  # fmt: skip
    attrs = {a: _group_labels(pred, a, source) for a in config.attributes}
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
