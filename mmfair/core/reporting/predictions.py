"""What the report computes from the runs' stored predictions (``runs/<id>/predictions_{val,test}.csv``):

* **reliability curves** per method × attribute × group on the test predictions (:func:`reliability_curves`);
* **fusion vs the best single modality chosen on validation** (:func:`fusion_vs_best_single`);
* **paired intervals for the modality-addition steps** (:func:`addition_intervals`).

Only aggregates leave this module, with the small-cell rule (:mod:`.suppression`) applied here, so no renderer
sees a patient row or a small cell. Every interval is the one patient-level bootstrap with a fixed seed
(:data:`SEED`): the report stays a pure function of the workspace. Only the default checkpoint's files
(``predictions_test.csv``, ``predictions_val.csv``) and binary tasks (one ``label``/``score``) are read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from mmfair.core.errors import MmfairError
from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap, percentile_ci
from mmfair.core.evaluation.groups import gap_groups, group_labels
from mmfair.core.evaluation.run_folder import (
    RunInfo,
    load_run_info,
    predictions_path,
    read_predictions,
    subject_ids,
    task_spec,
    thresholds_for,
)
from mmfair.core.evaluation.stats import paired_difference
from mmfair.core.reporting.fairness import complement
from mmfair.core.reporting.suppression import is_small
from mmfair.core.reporting.tables import label_conditions

log = logging.getLogger(__name__)

#: Equal-width bins of [0, 1] of the reliability curves (right-closed, as ``metrics.calibration_bins``).
N_BINS = 10
#: Bootstrap replicates and seed of every interval computed here.
N_BOOT = 1000
SEED = 0
#: Threshold rule of the rate-based gaps (EO, DP) of the addition steps: the tidy tables' default.
THRESHOLD_RULE = "val-youden"
#: Single-modality models a fusion model is compared with (a run on exactly one of them).
SINGLE_MODALITIES = ("ehr", "cxr")
#: Like with like: runs compared with each other share all of these.
CONDITION = ("task", "fold", "seed", "train_cohort", "split", "train_missing")


@dataclass(frozen=True)
class Run:
    """A finished binary-task run: its metadata, display name and test predictions (scored stays only)."""

    info: RunInfo
    method: str
    test: pd.DataFrame

    def key(self) -> tuple:
        base = self.info.row_base()
        return tuple(base[c] for c in CONDITION)


def _scored(pred: pd.DataFrame) -> pd.DataFrame:
    return pred[np.isfinite(pd.to_numeric(pred["score"], errors="coerce").to_numpy(dtype=float))]


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """Finished runs of binary tasks with readable test predictions; others are skipped (logged)."""
    infos, tests = [], []
    for run_dir in run_dirs:
        try:
            info = load_run_info(run_dir)
            pred = read_predictions(run_dir, "test")
            if task_spec(pred, predictions_path(run_dir, "test")).kind != "binary":
                continue
        except MmfairError as exc:
            log.info("%s: left out of the report's prediction figures: %s", run_dir, exc)
            continue
        infos.append(info)
        tests.append(_scored(pred))
    names = label_conditions(pd.DataFrame([i.row_base() for i in infos])) if infos else pd.DataFrame()
    return [Run(i, str(m), t) for i, m, t in zip(infos, names.get("method", []), tests)]


# ------------------------------------------------------------------------------------- reliability curves


def _groups(pred: pd.DataFrame, attribute: str, run: Run) -> np.ndarray | None:
    try:
        return group_labels(pred, attribute, predictions_path(run.info.run_dir, "test"))
    except MmfairError:
        return None


def _shown_groups(stays: pd.DataFrame, attribute: str, min_group_size: int) -> set[str]:
    """Groups passing the small-cell rule (primary + complementary), counted on distinct stays."""
    counts = stays.drop_duplicates("stay_id").groupby("group")["label"].agg(["size", "sum"])
    groups = counts.index.to_numpy(dtype=object)
    hidden = complement(attribute, groups, counts["size"], is_small(counts["size"], counts["sum"], min_group_size))
    return {str(g) for g, h in zip(groups, hidden) if not h}


def _curve_points(stays: pd.DataFrame, min_group_size: int) -> list[dict]:
    """Mean score and observed share of positives per bin; bins with fewer than k distinct stays dropped."""
    stays = stays.assign(bin=M.calibration_bins(stays["score"].to_numpy(dtype=float), N_BINS))
    out = []
    for b, part in stays.groupby("bin", sort=True):
        if part["stay_id"].nunique() >= min_group_size:
            out.append({"bin": int(b), "mean_score": part["score"].mean(), "observed": part["label"].mean()})
    return out


def reliability_curves(runs: list[Run], attributes: list[str], min_group_size: int) -> pd.DataFrame:
    """Per task × method × attribute × shown group: the reliability curve of the pooled test predictions of the
    method's runs (columns task, method, attribute, group, bin, mean_score, observed)."""
    cols = ["task", "method", "attribute", "group", "bin", "mean_score", "observed"]
    out = []
    for (task, method), block in _by_method(runs).items():
        for attribute in attributes:
            stays = _pooled(block, attribute)
            if stays is None:
                continue
            for group in sorted(_shown_groups(stays, attribute, min_group_size)):
                points = _curve_points(stays[stays["group"] == group], min_group_size)
                out += [{"task": task, "method": method, "attribute": attribute, "group": group, **p} for p in points]
    return pd.DataFrame(out, columns=cols)


def _by_method(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    out: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        out.setdefault((run.info.task, run.method), []).append(run)
    return dict(sorted(out.items()))


def _pooled(block: list[Run], attribute: str) -> pd.DataFrame | None:
    parts = []
    for run in block:
        groups = _groups(run.test, attribute, run)
        if groups is None:
            return None
        parts.append(pd.DataFrame({"stay_id": run.test["stay_id"].to_numpy(), "group": groups,
                                   "label": run.test["label"].to_numpy(dtype=float),
                                   "score": run.test["score"].to_numpy(dtype=float)}))  # fmt: skip
    return pd.concat(parts, ignore_index=True) if parts else None


# ------------------------------------------------------------------------- fusion vs best single modality


def _val_auroc_on_common(candidates: list[Run]) -> tuple[dict[str, float], int]:
    """Validation AUROC of each candidate on the validation stays every candidate scored (and their count)."""
    frames = {}
    for run in candidates:
        path = predictions_path(run.info.run_dir, "val")
        if path.exists():
            frames[run.info.run_id] = _scored(read_predictions(run.info.run_dir, "val"))
    if not frames:
        return {}, 0
    common = set.intersection(*(set(f["stay_id"]) for f in frames.values()))
    out = {}
    for run_id, f in frames.items():
        f = f[f["stay_id"].isin(common)]
        out[run_id] = float(M.auroc(f["label"].to_numpy(dtype=float), f["score"].to_numpy(dtype=float)))
    return out, len(common)


def choose_single(candidates: list[Run]) -> tuple[Run, str] | None:
    """The single-modality run with the higher validation AUROC (ties: by name) and why, in words. Test
    predictions are never read here."""
    values, n = _val_auroc_on_common(candidates)
    usable = [r for r in candidates if np.isfinite(values.get(r.info.run_id, np.nan))]
    if not usable:
        return None
    best = sorted(usable, key=lambda r: (-values[r.info.run_id], r.method, r.info.run_id))[0]
    others = ", ".join(f"{r.method} {values[r.info.run_id]:.3f}" for r in usable if r is not best)
    why = f"{best.method} {values[best.info.run_id]:.3f}" + (f" vs {others}" if others else " (only candidate)")
    return best, why + f" ({n} val stays)"


def _paired(a: Run, b: Run, metric: Callable) -> tuple[object, int]:
    joined = a.test.merge(b.test[["stay_id", "score"]], on="stay_id", suffixes=("", "__b"))
    res = paired_difference(joined["label"].to_numpy(dtype=float), joined["score"].to_numpy(dtype=float),
                            joined["score__b"].to_numpy(dtype=float), subject_ids(joined), metric=metric,
                            n_boot=N_BOOT, seed=SEED)  # fmt: skip
    return res, len(joined)


def fusion_vs_best_single(runs: list[Run]) -> pd.DataFrame:
    """Per condition (:data:`CONDITION`) and fusion run: test AUROC and AUPRC minus those of the single-modality
    run chosen on validation, paired on the stays both scored, with patient-level bootstrap intervals."""
    cols = ["task", "fold", "seed", "fusion", "comparator", "why", "n", "auroc", "auroc_lo", "auroc_hi", "auprc",
            "auprc_lo", "auprc_hi"]  # fmt: skip
    out = []
    for key, block in _by_condition(runs).items():
        singles = [r for r in block if r.info.modalities in SINGLE_MODALITIES]
        fusions = [r for r in block if "+" in r.info.modalities]
        choice = choose_single(singles) if singles and fusions else None
        if choice is None:
            continue
        comparator, why = choice
        for run in sorted(fusions, key=lambda r: r.method):
            au, n = _paired(run, comparator, M.auroc)
            pr, _ = _paired(run, comparator, M.auprc)
            out.append({"task": key[0], "fold": key[1], "seed": key[2], "fusion": run.method,
                        "comparator": comparator.method, "why": why, "n": n, "auroc": au.value, "auroc_lo": au.ci.low,
                        "auroc_hi": au.ci.high, "auprc": pr.value, "auprc_lo": pr.ci.low, "auprc_hi": pr.ci.high})
    return pd.DataFrame(out, columns=cols)


def _by_condition(runs: list[Run]) -> dict[tuple, list[Run]]:
    out: dict[tuple, list[Run]] = {}
    for run in runs:
        out.setdefault(run.key(), []).append(run)
    return dict(sorted(out.items(), key=lambda kv: tuple(str(v) for v in kv[0])))


# ------------------------------------------------------------------------------ modality-addition steps

def _per_group(fn: Callable, y, x, masks, w) -> np.ndarray:
    """``[..., G]``: ``fn(labels, x, weights)`` on each group's stays (a replicate axis first when ``w`` is given)."""
    return np.stack([np.asarray(fn(y[m], x[m], None if w is None else w[:, m]), dtype=float) for m in masks], axis=-1)


def _auroc_gap(y, s, hard, masks, w):
    return M.group_difference(_per_group(M.auroc, y, s, masks, w))


def _eo_diff(y, s, hard, masks, w):
    return M.equalized_odds(_per_group(M.tpr, y, hard, masks, w), _per_group(M.fpr, y, hard, masks, w))


def _dp_diff(y, s, hard, masks, w):
    return M.group_difference(_per_group(M.selection_rate, y, hard, masks, w))


#: Gaps of the addition table (labels as :data:`views.GAPS`), as eval-fair computes them: max − min over the
#: groups used (EO: the larger of the TPR and FPR gaps), rates at the run's validation threshold.
GAP_FUNCTIONS: dict[str, Callable] = {"AUROC gap": _auroc_gap, "EO diff": _eo_diff, "DP diff": _dp_diff}


def _used_groups(y, groups, min_group_size: int) -> list[str]:
    """The groups eval-fair's gaps use (both classes, every count at least the small-cell minimum)."""
    names = sorted(set(groups.tolist()))
    n_of = {g: int((groups == g).sum()) for g in names}
    pos_of = {g: int(y[groups == g].sum()) for g in names}
    return gap_groups(names, n_of, pos_of, max(min_group_size, 1))


@dataclass
class _Pair:
    """Two runs' test predictions on the stays both scored, with one bootstrap for both."""

    y: np.ndarray
    before: np.ndarray
    after: np.ndarray
    frame: pd.DataFrame
    boot: PatientBootstrap
    thresholds: tuple[float, float]


def _pair(a: Run, b: Run) -> _Pair:
    joined = a.test.merge(b.test[["stay_id", "score"]], on="stay_id", suffixes=("", "__after"))
    spec = task_spec(joined)
    thresholds = tuple(thresholds_for(r.info.run_dir, spec, THRESHOLD_RULE)["all"] for r in (a, b))
    boot = PatientBootstrap(subject_ids(joined), N_BOOT, SEED)
    return _Pair(joined["label"].to_numpy(dtype=float), joined["score"].to_numpy(dtype=float),
                 joined["score__after"].to_numpy(dtype=float), joined, boot, thresholds)  # fmt: skip


def _change(p: _Pair, stat: Callable) -> dict:
    """``stat(scores, threshold, weights)`` after − before on the pair's stays, with the paired interval."""
    before, after = float(stat(p.before, p.thresholds[0], None)), float(stat(p.after, p.thresholds[1], None))
    w = p.boot.weights
    reps = np.asarray(stat(p.after, p.thresholds[1], w), dtype=float) - np.asarray(stat(p.before, p.thresholds[0], w))
    ci = percentile_ci(reps)
    return {"before": before, "after": after, "change": after - before, "lo": ci.low, "hi": ci.high, "n": len(p.y)}


def step_rows(a: Run, b: Run, attributes: list[str], min_group_size: int) -> list[dict]:
    """AUROC, AUPRC and each gap per attribute of one step (run ``a`` → run ``b``), paired on shared stays."""
    p = _pair(a, b)
    rows = [{"attribute": "all", "quantity": name, **_change(p, lambda s, t, w, fn=fn: fn(p.y, s, w))}
            for name, fn in (("AUROC", M.auroc), ("AUPRC", M.auprc))]
    for attribute in attributes:
        groups = _groups(p.frame, attribute, a)
        if groups is None:
            continue
        used = _used_groups(p.y, groups, min_group_size)
        if len(used) < 2:
            continue
        masks = [groups == g for g in used]
        for quantity, gap in GAP_FUNCTIONS.items():
            stat = lambda s, t, w, gap=gap: gap(p.y, s, (s >= t).astype(float), masks, w)  # noqa: E731
            rows.append({"attribute": attribute, "quantity": quantity, **_change(p, stat)})
    return rows


def addition_intervals(steps: pd.DataFrame, runs: list[Run], min_group_size: int) -> pd.DataFrame:
    """The steps of :func:`views.addition_steps` recomputed on each pair's shared test stays with paired
    bootstrap intervals (columns lo, hi, n added); a step whose runs' predictions are unreadable keeps its
    tidy point values with empty intervals."""
    if len(steps) == 0:
        return steps.assign(lo=np.nan, hi=np.nan, n=np.nan)
    by_id = {r.info.run_id: r for r in runs}
    head = [c for c in steps.columns if c not in ("attribute", "quantity", "before", "after", "change")]
    out = []
    for pair, block in steps.groupby(["run_before", "run_after"], sort=False):
        first = block.iloc[0][head].to_dict()
        if pair[0] in by_id and pair[1] in by_id:
            attributes = sorted(set(block["attribute"]) - {"all"})
            try:
                rows = step_rows(by_id[pair[0]], by_id[pair[1]], attributes, min_group_size)
                out += [{**first, **r} for r in rows]
                continue
            except MmfairError as exc:
                log.info("step %s → %s: no paired interval: %s", pair[0], pair[1], exc)
        out += block.assign(lo=np.nan, hi=np.nan, n=np.nan).to_dict("records")
    return pd.DataFrame(out, columns=[*steps.columns, "lo", "hi", "n"])
