"""``eval-missing``: test metrics when a modality goes missing under a registered scenario, as tidy rows.

The scenario (registry ``SCENARIOS``, :mod:`.scenarios` or a plugin) gives the grid and each draw's
keep-mask; this module re-scores the run on it and applies the coverage rule of :mod:`.scoring`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mmfair.core.config import EvalMissingConfig
from mmfair.core.errors import InputFileError
from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap, percentile_ci
from mmfair.core.evaluation.groups import MISSING_ATTRIBUTE, gap_groups
from mmfair.core.evaluation.run_folder import (
    RunInfo,
    TaskSpec,
    check_aligned,
    cohort_mask,
    load_run_info,
    predictions_path,
    presence,
    read_predictions,
    subject_ids,
    task_spec,
    thresholds_for,
)
from mmfair.core.evaluation.scenarios import Removal, Scenario, ScenarioPoint, StayContext, draw_seed, get_scenario, level_text
from mmfair.core.evaluation.scoring import (
    ON_ALL,
    ON_CXR,
    REPS,
    PredictFn,
    Progress,
    Stat,
    covered,
    score_target,
    stat_row,
    task_rows,
)
from mmfair.core.evaluation.tidy import DEFAULTS, to_frame

log = logging.getLogger(__name__)

#: Gap rows of ``eval-missing`` per attribute (``group=all``), each over the groups where its rates are defined.
MISSING_GAP_METRICS = ("auroc_gap", "equalized_odds_difference", "demographic_parity_difference")
#: A realised share further than this from the requested rate (absolute, or relative to it) is warned about.
REALISED_TOLERANCE = (0.01, 0.1)


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
    coverage rule of :mod:`.scoring`. With ``config.attributes`` (for ``group``: its ``by`` attribute by
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
    scenario = get_scenario(config.mechanism)
    # a scenario may act on one modality whatever --modality says (the EHR perturbations: ehr)
    modality = getattr(scenario, "modality", None) or config.modality
    points = scenario.points(config)
    rows: list[dict] = []
    cache: dict[tuple, pd.DataFrame] = {}
    run_dirs = list(run_dirs)
    total = len(run_dirs) * sum(p.draws for p in points)
    done = 0
    warned: set = set()
    for run_dir in run_dirs:
        run = _missing_run(Path(run_dir), config, modality)
        for point in points:
            point_rows: list[dict] = []
            for draw in range(point.draws):
                point_rows += _draw_rows(run, scenario, point, draw, config, predict_fn, cache, warned)
                done += 1
                if progress:
                    progress("missing-modality scenarios", done, total)
            rows += _pool_draws(point_rows)
    return to_frame(rows)


@dataclass(frozen=True)
class _MissingRun:
    """One run's saved test predictions and what every draw of its scenario shares."""

    run_dir: Path
    info: RunInfo
    pred: pd.DataFrame
    spec: TaskSpec
    modality: str
    in_cohort: np.ndarray  # the stays of the test cohort (matched: only those with a CXR)
    present: np.ndarray  # the stays that have the modality naturally
    ctx: StayContext
    boot: PatientBootstrap
    levels_by_attribute: dict[str, np.ndarray]
    thresholds: dict[str, float]  # the run's validation threshold per label (for the threshold gaps)


def _missing_run(run_dir: Path, config: EvalMissingConfig, modality: str) -> _MissingRun:
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
    levels_by_attribute = {}
    for attribute in config.group_attributes():
        if attribute not in pred.columns:
            raise InputFileError(MISSING_ATTRIBUTE.format(source, attribute))
        levels_by_attribute[attribute] = level_text(pred[attribute].to_numpy())
    # the operating point of the threshold gaps: the run's validation threshold, never re-chosen on test
    needs_threshold = levels_by_attribute and spec.kind != "multiclass"
    thresholds = thresholds_for(run_dir, spec, DEFAULTS["threshold_rule"]) if needs_threshold else {}
    return _MissingRun(run_dir, info, pred, spec, modality, in_cohort, present, ctx, boot, levels_by_attribute,
                       thresholds)  # fmt: skip


def _draw_rows(run: _MissingRun, scenario: Scenario, point: ScenarioPoint, draw: int, config: EvalMissingConfig,
               predict_fn: PredictFn, cache: dict, warned: set) -> list[dict]:  # fmt: skip
    """The rows of one draw of one point of the scenario's grid on one run."""
    dseed = None if point.seed_key is None else draw_seed(config.seed, point.seed_key, draw)
    removal = scenario.apply(point, run.ctx, dseed)
    keep, present = removal.keep, run.present
    scored = _rescored(run, removal, predict_fn, cache)
    evaluated = removal.evaluated & run.in_cohort
    n_eval = int(evaluated.sum())
    lacking = ~(present & keep)
    without = int((evaluated & lacking).sum())
    realised = _realised_removal(removal, present, keep, evaluated)
    _warn_realised(point.params.get("requested_rate"), realised, warned)
    params = {"modality": run.modality, **point.params, **removal.params, **realised}
    base = {
        **run.info.row_base(), "scenario": scenario.name, "scenario_params": json.dumps(params, sort_keys=True),
        "missing_rate": without / n_eval if n_eval else float("nan"), "draw": draw, "draw_seed": dseed,
        **_scored_stays(evaluated, run.in_cohort, present, run.modality, config.test_cohort),
    }  # fmt: skip
    rows = task_rows(scored, run.spec, evaluated, run.boot, base, ("auroc", "auprc"))
    rows += _missing_group_rows(scored, run.spec, evaluated, lacking, run.boot, base, run.levels_by_attribute,
                                run.thresholds, config.min_group_size)  # fmt: skip
    return rows


def _rescored(run: _MissingRun, removal: Removal, predict_fn: PredictFn, cache: dict) -> pd.DataFrame:
    """The run's test predictions after the removal (cached per run and mask), labels from the saved file."""
    keep, transform = removal.keep, removal.ehr_transform
    if transform is None:
        key = _mask_key(run.run_dir, "test", run.modality, keep)
    else:
        key = (str(Path(run.run_dir).resolve()), "test", "ehr_transform", transform.key())
    if key not in cache:
        if transform is None:
            out = predict_fn(run.run_dir, "test", {run.modality: keep.copy()})
        else:  # the stays keep the EHR; its raw values are perturbed before imputation
            out = predict_fn(run.run_dir, "test", {}, ehr_transform=transform)
        check_aligned(out, run.pred, run.run_dir, "test")
        cache[key] = out
    scored = cache[key].copy()
    for _, label_col, _ in run.spec.targets:  # labels always from the saved predictions
        scored[label_col] = run.pred[label_col].to_numpy()
    if run.spec.kind == "multiclass":
        scored["label"] = run.pred["label"].to_numpy()
    return scored


def _mask_key(run_dir: Path, split: str, modality: str, keep: np.ndarray) -> tuple[str, str, str, str]:
    digest = hashlib.sha1(np.packbits(keep).tobytes() + str(keep.size).encode()).hexdigest()
    return (str(Path(run_dir).resolve()), split, modality, digest)


def _strata(pred: pd.DataFrame, spec: TaskSpec) -> tuple[np.ndarray, str]:
    if spec.kind == "multilabel":
        col = spec.targets[0][1]
    else:
        col = "label"
    return pred[col].to_numpy(), col


def _missing_group_rows(scored: pd.DataFrame, spec: TaskSpec, evaluated: np.ndarray, lacking: np.ndarray,
                        boot: PatientBootstrap, base: dict, levels_by_attribute: dict[str, np.ndarray],
                        thresholds: dict[str, float], min_group_size: int = 1) -> list[dict]:  # fmt: skip
    """Per-group ``auroc`` rows and the gap rows (group ``all``) of one scenario draw.

    Groups are those with an evaluated stay; each group follows the coverage rule on its own evaluated
    stays, and its row's ``missing_rate`` is the share of *its* evaluated stays without the modality
    (``lacking``), so a structured mechanism's per-group removal can be read off. The gaps, with
    eval-fair's definitions (:func:`.fair.evaluate_fairness`) on the stays the method scored, at the run's
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
                auroc[g] = score_target(y, s, in_group, boot, ("auroc",))["auroc"]
                n_group = int(in_group.sum())
                group_rate = float((in_group & lacking).sum()) / n_group if n_group else float("nan")
                rows.append(stat_row({**base, "missing_rate": group_rate}, boot, "auroc", auroc[g], label=label,
                                     attribute=attribute, group=g))  # fmt: skip
                scored_in_group = in_group & np.isfinite(s)
                rates[g] = _group_rates(y, hard, scored_in_group, covered(int(scored_in_group.sum()), n_group), boot)
            for name in MISSING_GAP_METRICS:
                gap = _missing_gap(name, eligible, auroc, rates, boot)
                rows.append(stat_row(base, boot, name, gap, label=label, attribute=attribute, group="all"))
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


def _missing_gap(name: str, groups: list, auroc: dict, rates: dict, boot: PatientBootstrap) -> Stat:
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
        return Stat(float("nan"), np.full(boot.n_boot, np.nan), n, n_pos, False)
    value = float(fn(*values))
    r = np.asarray(fn(*reps), dtype=float) if boot.n_boot else np.empty(0)
    return Stat(value, r, n, n_pos, bool(np.isfinite(value)))


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


def _warn_realised(requested: float | None, realised: dict, warned: set) -> None:
    """Warn once per (rate, count) when a requested rate removes nothing or far from what was asked."""
    share = realised["removed_share"]
    if requested is None or requested <= 0 or share is None:
        return
    key = (requested, realised["removed"])
    far = abs(share - requested) > max(REALISED_TOLERANCE[0], REALISED_TOLERANCE[1] * requested)
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
        if len(same) < 2 or not all(REPS in r for r in same):
            continue
        ci = percentile_ci(np.concatenate([np.asarray(r[REPS], dtype=float) for r in same]))
        for r in same:
            r["ci_low"], r["ci_high"] = ci.low, ci.high
    return rows


