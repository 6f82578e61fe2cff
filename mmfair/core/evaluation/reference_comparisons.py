"""Every method against a reference method on the same test stays, as tidy rows.

For each finished run whose method is not the reference (default ``late``) the reference run on the same
task and test fold is found (the same seed when there is one, else the lowest seed) and both runs' test
predictions are joined on ``stay_id``; stays either run cannot score are left out of both, so the two are
always compared on the same stays, and ``evaluated_on`` says which: ``all`` (both score every stay),
``with_cxr`` (the shared stays are exactly those with a CXR: a CXR-only method against late fusion) or
``common`` (another shared subset); ``n`` is their number. A pair sharing no stay is not compared
(logged). A run that cannot be compared (a user-facing error) is logged and skipped; the others are
compared (issue 16). Per label
(binary: ``all``; phenotypes: each slug; length of stay is not compared here):

* ``auroc_difference`` = AUROC(method) − AUROC(reference) with the paired patient-level bootstrap
  interval (:func:`~.stats.paired_difference`: both methods on the same replicates), on all joined
  stays (``attribute=all``) and on the stays **without a CXR** only (``attribute=has_cxr, group=0``:
  "does a missing-aware method beat late fusion where the CXR is missing?");
* ``auroc_gap_difference`` = AUROC gap(method) − AUROC gap(reference) per sensitive attribute
  (``group=all``), the gap being max − min group AUROC over the groups that pass the small-cell rule
  (:func:`~.groups.gap_groups`, as in ``eval-fair``), with the paired bootstrap interval;
* for each, ``*_p``: the two-sided paired permutation p-value (:func:`~.stats.paired_permutation_test`,
  whole patients swapped between the two methods) and ``*_p_adjusted``: Holm or Benjamini–Hochberg across
  the labels of the run (one family per run, metric, attribute and group; a binary task's family has one
  member, so its adjusted p is the raw p). p-value rows have no interval.

``scenario_params`` names the reference: ``{"reference": method, "reference_run": run_id, "permutations":
P, "adjust": "holm"}``; ``n``/``n_pos`` count the compared stays.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mmfair.core.config import EvalFairConfig
from mmfair.core.errors import InputFileError, MmfairError
from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation import stats
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.groups import gap_groups, group_labels
from mmfair.core.evaluation.run_folder import (
    RunInfo,
    cohort_mask,
    load_run_info,
    predictions_path,
    presence,
    read_predictions,
    subject_ids,
    task_spec,
)
from mmfair.core.evaluation.tidy import make_row, to_frame

log = logging.getLogger(__name__)

_LABELS_DIFFER = "{0} and {1} give different '{2}' labels for the same stays: not the same test fold"

#: The attribute/group of the comparison restricted to stays without a CXR.
NO_CXR = ("has_cxr", "0")


def _reference_for(info: RunInfo, references: list[RunInfo]) -> RunInfo | None:
    same_fold = [r for r in references if r.task == info.task and r.fold == info.fold]
    if not same_fold:
        return None
    same_seed = [r for r in same_fold if r.seed == info.seed]
    return (same_seed or sorted(same_fold, key=lambda r: (r.seed is None, r.seed or 0, r.run_id)))[0]


def _test_frame(info: RunInfo, test_cohort: str) -> pd.DataFrame:
    pred = read_predictions(info.run_dir, "test")
    return pred[cohort_mask(pred, test_cohort, predictions_path(info.run_dir, "test"))]


def gap_difference(y, score_a, score_b, groups, subjects, *, min_group_size: int, n_boot: int, seed: int,
                   n_perm: int) -> dict | None:  # fmt: skip
    """AUROC gap (max − min over the groups passing the small-cell rule) of ``a`` minus that of ``b``.

    Returns ``value, low, high, p, n, n_pos`` (``None`` with fewer than two usable groups). Stays are those
    where both scores are finite; a bootstrap replicate in which a used group loses a class is dropped.
    """
    keep = np.isfinite(score_a) & np.isfinite(score_b)
    y, a, b, g, subj = y[keep], score_a[keep], score_b[keep], np.asarray(groups, dtype=object)[keep], subjects[keep]
    names = sorted(set(g.tolist()))
    n_of = {k: int((g == k).sum()) for k in names}
    pos_of = {k: int(y[g == k].sum()) for k in names}
    used = gap_groups(names, n_of, pos_of, max(min_group_size, 1))
    if len(used) < 2:
        return None
    in_gap = np.isin(g, used)
    y, a, b, g, subj = y[in_gap], a[in_gap], b[in_gap], g[in_gap], subj[in_gap]
    boot = PatientBootstrap(subj, n_boot, seed)

    def gap(x, w=None) -> np.ndarray | float:
        vals = [M.auroc(y[g == k], x[g == k], None if w is None else w[:, g == k]) for k in used]
        return np.max(vals, axis=0) - np.min(vals, axis=0)

    value = float(gap(a) - gap(b))
    reps = gap(a, boot.weights) - gap(b, boot.weights) if n_boot else np.empty(0)
    ci = boot.ci(reps)
    p = float("nan")
    if n_perm:
        statistic = stats.group_gap_statistic(g, "auroc")
        p = stats.paired_permutation_test(y, a, b, subj, statistic=statistic, n_perm=n_perm, seed=seed).p_value
    return {"value": value, "low": ci.low, "high": ci.high, "p": p, "n": int(y.size), "n_pos": int(y.sum())}


def _difference_rows(base: dict, metric: str, result: dict, **fields) -> list[dict]:
    common = {**base, **fields, "n": result["n"], "n_pos": result["n_pos"]}
    return [
        make_row(**common, metric=metric, value=result["value"], ci_low=result["low"], ci_high=result["high"]),
        make_row(**common, metric=f"{metric}_p", value=result["p"]),
    ]


def _adjusted(rows: list[dict], method: str) -> list[dict]:
    """``*_p_adjusted`` rows: each family (run, metric, attribute, group) adjusted across its labels."""
    frame = pd.DataFrame([r for r in rows if str(r["metric"]).endswith("_p")])
    out: list[dict] = []
    if frame.empty:
        return out
    for _, family in frame.groupby(["run_id", "metric", "attribute", "group"], sort=False):
        adjusted = stats.adjust_p(family["value"].to_numpy(dtype=float), method)
        for (_, r), p in zip(family.iterrows(), adjusted):
            fields = {k: r[k] for k in r.index if k not in ("metric", "value", "higher_is_better", "defined",
                                                             "ci_low", "ci_high")}  # fmt: skip
            out.append(make_row(**fields, metric=f"{r['metric']}_adjusted", value=p))
    return out


def evaluate_comparisons(run_dirs: Sequence[Path], config: EvalFairConfig) -> pd.DataFrame:
    """Paired comparisons of every run with its reference run (see the module docstring); tidy rows."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _evaluate_comparisons(run_dirs, config)


def _evaluate_comparisons(run_dirs: Sequence[Path], config: EvalFairConfig) -> pd.DataFrame:
    if not config.reference:
        return to_frame([])

    infos = [load_run_info(r, config.test_cohort) for r in run_dirs]
    references = [i for i in infos if i.method == config.reference]
    if not references:
        log.info("no run of the reference method '%s': no paired comparisons", config.reference)
        return to_frame([])
    rows: list[dict] = []
    for info in infos:
        if info.method == config.reference:
            continue
        ref = _reference_for(info, references)
        if ref is None:
            log.info("%s: no %s run on task %s, fold %s to compare with", info.run_id, config.reference, info.task,
                     info.fold)  # fmt: skip
            continue
        try:
            rows += _pair_rows(info, ref, config)
        except MmfairError as exc:
            log.warning("%s: not compared with %s: %s", info.run_id, ref.run_id, exc)
    return to_frame(rows)


def _shared_stays(joined: pd.DataFrame, score_cols: list[str], source: object) -> tuple[pd.DataFrame, str]:
    """The joined stays both methods scored for every label, and their ``evaluated_on`` name."""
    both = np.ones(len(joined), dtype=bool)
    for col in score_cols:
        both &= np.isfinite(joined[col].to_numpy(dtype=float))
        both &= np.isfinite(joined[f"{col}__reference"].to_numpy(dtype=float))
    if both.all():
        return joined, "all"
    with_cxr = presence(joined, "cxr", source, required=False)
    on = "with_cxr" if np.array_equal(both, with_cxr) else "common"
    return joined[both].reset_index(drop=True), on


def _pair_rows(info: RunInfo, ref: RunInfo, config: EvalFairConfig) -> list[dict]:
    """The comparison rows of one run against its reference run (see the module docstring)."""
    rows: list[dict] = []
    a = _test_frame(info, config.test_cohort)
    b = _test_frame(ref, config.test_cohort)
    source = predictions_path(info.run_dir, "test")
    spec = task_spec(a, source)
    if spec.kind == "multiclass":
        log.info("%s: length of stay is not compared pairwise", info.run_id)
        return rows
    score_cols = [s for _, _, s in spec.targets]
    label_cols = [c for _, c, _ in spec.targets]
    joined = a.merge(b[["stay_id", *label_cols, *score_cols]], on="stay_id", suffixes=("", "__reference"))
    for col in label_cols:
        if not np.array_equal(joined[col].to_numpy(), joined[f"{col}__reference"].to_numpy()):
            raise InputFileError(_LABELS_DIFFER.format(source, predictions_path(ref.run_dir, "test"), col))
    joined, on = _shared_stays(joined, score_cols, source)
    if joined.empty:
        log.info("%s and %s share no scored test stay: not comparable", info.run_id, ref.run_id)
        return rows
    subjects = subject_ids(joined, source)
    no_cxr = ~presence(joined, "cxr", source, required=False)
    attrs = {att: group_labels(joined, att, source) for att in config.attributes}
    params = {"reference": config.reference, "reference_run": ref.run_id, "permutations": config.permutations,
              "adjust": config.adjust}  # fmt: skip
    base = {**info.row_base(), "scenario_params": json.dumps(params, sort_keys=True), "evaluated_on": on}
    run_rows: list[dict] = []
    for label, label_col, score_col in spec.targets:
        y = joined[label_col].to_numpy(dtype=float)
        sa = joined[score_col].to_numpy(dtype=float)
        sb = joined[f"{score_col}__reference"].to_numpy(dtype=float)
        subsets = [("all", "all", np.ones(len(joined), dtype=bool))]
        if no_cxr.any():
            subsets.append((*NO_CXR, no_cxr))
        for attribute, group, mask in subsets:
            res = stats.paired_difference(y[mask], sa[mask], sb[mask], subjects[mask], n_boot=config.bootstrap,
                                          seed=config.seed, n_perm=config.permutations)  # fmt: skip
            result = {"value": res.value, "low": res.ci.low, "high": res.ci.high, "p": res.p_value,
                      "n": res.n, "n_pos": res.n_pos}  # fmt: skip
            if not np.isfinite(res.value):
                result["p"] = float("nan")
            run_rows += _difference_rows(base, "auroc_difference", result, label=label, attribute=attribute,
                                         group=group)  # fmt: skip
        for attribute, groups in attrs.items():
            res = gap_difference(y, sa, sb, groups, subjects, min_group_size=config.min_group_size,
                                 n_boot=config.bootstrap, seed=config.seed, n_perm=config.permutations)  # fmt: skip
            if res is None:
                res = {"value": float("nan"), "low": float("nan"), "high": float("nan"), "p": float("nan"),
                       "n": None, "n_pos": None}  # fmt: skip
            run_rows += _difference_rows(base, "auroc_gap_difference", res, label=label, attribute=attribute,
                                         group="all")  # fmt: skip
    rows += run_rows + _adjusted(run_rows, config.adjust)
    return rows
