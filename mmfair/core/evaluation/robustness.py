"""Robustness summaries of the missing-modality curves, as tidy rows (raw values, never min–max normalised).

A **curve** is the rows of one run, label, attribute (``all`` for the overall metrics; a fairness
gap's attribute when gap rows exist), metric and scenario family — the same ``scenario`` and the same
``scenario_params`` apart from the point of the grid (``requested_rate`` of ``mcar``, the profile
``rates`` of ``group``/``label``). Its points are ``(x, m)``: ``x`` the row's ``missing_rate`` (the
final share of evaluated stays without the modality), ``m`` the metric averaged over the point's draws
(undefined if any draw is undefined); points with the same ``x`` are averaged. The clean point is
``x = 0`` (always evaluated). ``natural`` has one point and another population: it gets no summary.

With points ``x_0 = 0 < x_1 < … < x_k``:

``relative_robustness`` (MultiBench; ``anchors_tier2.md`` §3, §9)
    the trapezoid-rule area under ``m(x)`` divided by the span ``x_k − x_0``: the curve's mean height,
    in the metric's own units (a flat curve at 0.80 gives 0.80). Undefined with fewer than two distinct
    rates or any undefined point.
``effective_robustness`` (MultiBench after Taori et al.)
    ``mean_i [ m(x_i) − (ref(x_i) + m(0) − ref(0)) ]`` over the points ``x_0 … x_k`` the run shares with
    the reference curve (``x_0`` included, where the term is 0 by construction). ``ref`` is the
    reference method's curve (``late`` by default) on the same task, label, fold, test cohort and
    scenario family, averaged over every run of the reference method there (seeds; their ids are
    recorded as ``reference_runs``); points are matched by ``scenario_params``, i.e. the same removals.
    The reference method's own value is 0 when it has one run on the fold. Undefined without a
    reference curve.
``r_star`` (fusion methods only: runs with two or more modalities)
    the smallest evaluated rate ``x_i`` at which the fusion run's lower 95 % bound (``ci_low``, averaged
    over draws) falls strictly below the best single-modality model's value at that rate. The best
    single-modality value is the maximum, over the single-modality methods evaluated on the same task,
    label, fold, test cohort and scenario family, of each method's value averaged over its runs; a rate
    where no single-modality value is defined is skipped. A fusion run that cannot score at a rate
    where a single-modality model can counts as below. No interpolation between rates. When the bound
    never falls below, ``r_star`` is ``defined=false`` with ``"crossed": false`` in ``scenario_params``
    ("fusion helps over the whole evaluated range"); without bootstrap intervals or without a
    single-modality run it is ``defined=false`` with a ``reason``.

Only metrics with a direction are summarised. For a lower-is-better metric (a gap) the rows keep the
raw value and ``higher_is_better=false``; ``r_star`` is only computed for higher-is-better metrics.

Summary rows: ``scenario`` = the curve's mechanism, ``scenario_params`` = the family's parameters plus
``of`` (the summarised metric), ``curve_rates`` (the ``x_i`` used) and the extra fields above;
``missing_rate`` and ``draw_seed`` empty, ``draw`` 0, ``n``/``n_pos`` of the clean point, no interval.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from mmfair.core.evaluation.tidy import HIGHER_IS_BETTER, make_row, normalise, read_results, to_frame
from mmfair.core.io import write_csv_atomic

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("relative_robustness", "effective_robustness", "r_star")
DEFAULT_METRICS = ("auroc", "auprc")
_POINT_KEYS = ("requested_rate", "rates")
_CURVE = ["task", "label", "fold", "test_cohort", "attribute", "metric", "scenario", "family"]
_RUN_FIELDS = ("run_id", "method", "modalities", "task", "label", "fold", "seed", "train_cohort", "test_cohort",
               "selection", "train_missing_rate", "threshold_rule", "attribute")  # fmt: skip
_X_DECIMALS = 9


def _family(params: str) -> str:
    try:
        p = json.loads(params or "{}")
    except json.JSONDecodeError:
        p = {}
    return json.dumps({k: v for k, v in p.items() if k not in _POINT_KEYS}, sort_keys=True)


def curve_points(missing: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per (run, label, attribute, metric, scenario family, point): draws averaged.

    Columns: the run fields, ``scenario``, ``family``, ``point`` (the ``scenario_params`` text), ``x``,
    ``value`` (NaN if any draw is undefined), ``ci_low``, ``ci_high``, ``n``, ``n_pos``.
    """
    df = normalise(missing)
    wanted = set(metrics) if metrics is not None else None
    mask = (df["scenario"] != "none") & (df["scenario"] != "natural") & (df["group"] == "all")
    mask &= ~df["metric"].isin(SUMMARY_METRICS) & df["metric"].map(lambda m: HIGHER_IS_BETTER.get(m) is not None)
    if wanted is not None:
        mask &= df["metric"].isin(wanted) | (df["attribute"] != "all")
    df = df[mask].copy()
    if len(df) == 0:
        return pd.DataFrame(columns=[*_RUN_FIELDS, "metric", "scenario", "family", "point", "x", "value",
                                     "ci_low", "ci_high", "n", "n_pos"])  # fmt: skip
    df["family"] = df["scenario_params"].map(_family)
    df["point"] = df["scenario_params"]
    df["val"] = df["value"].where(df["defined"], np.nan)
    keys = [*_RUN_FIELDS, "metric", "scenario", "family", "point"]
    for col in ("train_missing_rate", "fold", "seed"):
        df[col] = df[col].astype(object).where(df[col].notna(), "")
    agg = df.groupby(keys, sort=False, dropna=False).agg(
        x=("missing_rate", "mean"), value=("val", lambda v: v.mean() if v.notna().all() else np.nan),
        ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"), n=("n", "first"), n_pos=("n_pos", "first"),
    ).reset_index()  # fmt: skip
    agg["x"] = agg["x"].round(_X_DECIMALS)
    return agg


def _curve(block: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Points of one curve sorted by rate; points with the same rate averaged (undefined if one is)."""
    g = block.groupby("x", sort=True)["value"].agg(lambda v: v.mean() if v.notna().all() else np.nan)
    return g.index.to_numpy(dtype=float), g.to_numpy(dtype=float)


def relative_robustness(x, m) -> float:
    """Trapezoid-rule area under ``m(x)`` divided by the span ``x[-1] − x[0]`` (NaN if undefined)."""
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    if x.size < 2 or not np.all(np.isfinite(m)) or x[-1] <= x[0]:
        return float("nan")
    area = float(np.sum(np.diff(x) * (m[1:] + m[:-1]) / 2.0))
    return area / float(x[-1] - x[0])


def effective_robustness(m, ref) -> float:
    """``mean_i [m_i − (ref_i + m_0 − ref_0)]``; index 0 is the clean point (NaN if any value is)."""
    m, ref = np.asarray(m, dtype=float), np.asarray(ref, dtype=float)
    if m.size == 0 or m.shape != ref.shape or not (np.all(np.isfinite(m)) and np.all(np.isfinite(ref))):
        return float("nan")
    return float(np.mean(m - (ref + m[0] - ref[0])))


def r_star(x, fusion_low, fusion_value, best_single) -> tuple[float, bool]:
    """``(r*, crossed)``: the first rate where the fusion lower bound < the best single-modality value.

    A rate with no defined single-modality value is skipped; an undefined fusion value (the method
    cannot score there) counts as below. ``(nan, False)`` when it never falls below.
    """
    for xi, lo, val, best in zip(x, fusion_low, fusion_value, best_single):
        if not np.isfinite(best):
            continue
        if not np.isfinite(val) or lo < best:
            return float(xi), True
    return float("nan"), False


def summarise(missing: pd.DataFrame, *, reference: str = "late", metrics: Iterable[str] | None = DEFAULT_METRICS) -> pd.DataFrame:
    """Summary rows (``relative_robustness``, ``effective_robustness``, ``r_star``) of every curve.

    ``missing`` is a tidy table of missing-modality rows (summary rows in it are ignored); ``metrics``
    limits the overall metrics summarised (gap rows, ``attribute != all``, are always taken).
    """
    pts = curve_points(missing, metrics)
    rows: list[dict] = []
    if len(pts) == 0:
        return to_frame(rows)
    for key, curve_block in pts.groupby(_CURVE, sort=True, dropna=False):
        ctx = dict(zip(_CURVE, key))
        metric = ctx["metric"]
        direction = HIGHER_IS_BETTER.get(metric)
        ref_rows = curve_block[curve_block["method"] == reference]
        ref_pts = ref_rows.groupby("point")["value"].agg(lambda v: v.mean() if v.notna().all() else np.nan)
        ref_x = ref_rows.groupby("point")["x"].first()
        mods = curve_block["modalities"].astype(str)
        single = curve_block[(mods != "") & ~mods.str.contains("+", regex=False)]
        single_by_x = (single.groupby(["method", "x"])["value"].agg(lambda v: v.mean() if v.notna().all() else np.nan)
                       .groupby("x").max())  # fmt: skip
        family = json.loads(ctx["family"])
        for run_id, run in curve_block.groupby("run_id", sort=True):
            first = run.iloc[0]
            clean = run[run["x"] == 0]
            base = {f: first[f] for f in _RUN_FIELDS}
            for col in ("fold", "seed", "train_missing_rate"):
                base[col] = None if base[col] == "" else base[col]
            base.update(scenario=ctx["scenario"], missing_rate=None, draw=0, draw_seed=None, group="all")
            n = int(clean["n"].iloc[0]) if len(clean) and pd.notna(clean["n"].iloc[0]) else None
            n_pos = int(clean["n_pos"].iloc[0]) if len(clean) and pd.notna(clean["n_pos"].iloc[0]) else None
            x, m = _curve(run)

            def emit(name: str, value: float, extra: dict, higher: bool | None) -> None:
                params = {**family, "of": metric, **extra}
                row = make_row(**base, scenario_params=json.dumps(params, sort_keys=True), metric=name,
                               value=value, n=n, n_pos=n_pos, defined=bool(np.isfinite(value)))  # fmt: skip
                row["higher_is_better"] = higher
                rows.append(row)

            rr = relative_robustness(x, m)
            emit("relative_robustness", rr, {"curve_rates": x.tolist()}, direction)

            # effective robustness against the reference curve, matched point by point
            common = [p for p in run["point"] if p in ref_pts.index]
            er_extra: dict = {"reference": reference, "reference_runs": sorted(set(ref_rows["run_id"]))}
            er = float("nan")
            if not common:
                er_extra["reason"] = f"no {reference} curve on this fold"
            else:
                sub = run.set_index("point").loc[common]
                order = np.argsort(sub["x"].to_numpy(), kind="mergesort")
                xs = sub["x"].to_numpy()[order]
                if xs[0] != 0:
                    er_extra["reason"] = "no shared clean point"
                else:
                    er = effective_robustness(sub["value"].to_numpy()[order], ref_pts.loc[common].to_numpy()[order])
                    er_extra["curve_rates"] = [float(v) for v in ref_x.loc[common].to_numpy()[order]]
            emit("effective_robustness", er, er_extra, direction)

            if "+" in str(first["modalities"]) and direction is True:
                lo = run.groupby("x", sort=True)["ci_low"].mean().reindex(x).to_numpy()
                best = single_by_x.reindex(x).to_numpy(dtype=float) if len(single_by_x) else np.full(x.size, np.nan)
                extra: dict = {"curve_rates": x.tolist()}
                if not np.any(np.isfinite(best)):
                    value, extra["reason"] = float("nan"), "no single-modality run on this fold"
                elif not np.any(np.isfinite(lo)):
                    value, extra["reason"] = float("nan"), "no bootstrap interval (bootstrap=0)"
                else:
                    value, crossed = r_star(x, lo, m, best)
                    extra["crossed"] = crossed
                    if not crossed:
                        extra["reason"] = f"lower bound never below the best single modality up to {x[-1]:g}"
                emit("r_star", value, extra, True)
    return to_frame(rows)


def update_summaries(path: Path, *, reference: str = "late", metrics: Iterable[str] | None = DEFAULT_METRICS) -> pd.DataFrame:
    """Recompute every summary row of the tidy table at ``path`` from its curve rows (idempotent).

    All existing summary rows are dropped first (a summary depends on every run of its fold, so stale
    ones must not survive a rerun with other rates or runs); the file is rewritten atomically.
    Returns the summary rows.
    """
    table = read_results(Path(path))
    kept = table[~table["metric"].isin(SUMMARY_METRICS)]
    summaries = summarise(kept, reference=reference, metrics=metrics)
    merged = normalise(pd.concat([kept, summaries], ignore_index=True)) if len(summaries) else kept
    write_csv_atomic(Path(path), merged.reset_index(drop=True))
    return summaries
