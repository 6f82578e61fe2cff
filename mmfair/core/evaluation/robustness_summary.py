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
    reference method's curve (``late`` by default) on the same task, label, fold, test cohort, split and
    scenario family, averaged over every run of the reference method there (seeds; their ids are
    recorded as ``reference_runs``) trained on the same modalities as the summarised run — for a run whose
    modalities no reference run has (a single-modality run), on the smallest set that holds them, ties by
    name (``reference_modalities``); points are matched by ``scenario_params``, i.e. the same removals.
    The reference method's own value is 0 when it has one run on the fold. Undefined without a
    reference curve.
``r_star`` (fusion methods only: runs with two or more modalities)
    the smallest evaluated rate ``x_i`` at which the fusion run's lower 95 % bound (``ci_low``, averaged
    over draws) falls strictly below the comparator's value at that rate. The comparator is ONE
    single-modality model, the best one *chosen on validation* (issue 11; never the maximum of test
    values, which picks a winner with the test set): among the single-modality methods of one of the
    fusion run's own modalities (a static-only run is no comparator for ``ehr+cxr``) evaluated on the
    same task, label, fold, test cohort, evaluated stays, split and scenario family, and able to score
    every evaluated stay at every rate of the fusion curve (so both are scored on the same stays with the
    same removal at each rate: a CXR-only model that cannot score a stay whose CXR was removed is not
    comparable and is listed in ``not_comparable``), the one with the highest mean validation AUROC of
    the label over its runs (``validation``: :func:`validation_scores`; ties by name). Its value at each
    rate is averaged over its runs and recorded as ``comparator``/``comparator_runs``/
    ``comparator_val_auroc``. Without validation scores r* is undefined with a ``reason``. A fusion run
    that cannot score at a rate counts as below. No interpolation between rates. When the bound
    never falls below, ``r_star`` is ``defined=false`` with ``"crossed": false`` in ``scenario_params``
    ("fusion helps over the whole evaluated range"); without bootstrap intervals or without a
    single-modality run it is ``defined=false`` with a ``reason``. For a lower-is-better metric (a
    fairness gap) the mirror image: the first rate at which the fusion run's *upper* bound (``ci_high``)
    rises strictly above the best (smallest) single-modality gap — "fusion is no longer surely fairer".

Only metrics with a direction are summarised. Relative and effective robustness keep the raw value
and the summarised metric's direction (a gap's rows: ``higher_is_better=false``, ``"direction": "lower
is better"`` in ``scenario_params``: a larger relative robustness of a gap is a larger average gap, a
positive effective robustness a gap that grows faster than the reference's). ``r_star`` is
``higher_is_better=true`` for every metric (later is better).

Train-time missingness (``train_missing``: ``none``, ``dropout=0.3``, ``rate=0.5``; a table without
the column, or an empty cell, reads ``none``): every run is its own curve, so runs that differ only in
it are never averaged together. The reference curve and the single-modality comparators are taken from
the runs with the same ``train_missing`` as the summarised run where there are any, else from the
``none`` runs; the protocol used is recorded as ``reference_train_missing`` /
``single_train_missing`` in ``scenario_params``; the summary row's own ``train_missing`` is the run's.

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

from mmfair.core.config import BASELINE_METHOD
from mmfair.core.errors import MmfairError
from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.run_folder import load_run_info, predictions_path, read_predictions, task_spec
from mmfair.core.evaluation.tidy import HIGHER_IS_BETTER, make_row, normalise, rewrite_results, to_frame
from mmfair.core.registry import SCENARIOS

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("relative_robustness", "effective_robustness", "r_star")
DEFAULT_METRICS = ("auroc", "auprc")
#: ``scenario_params`` keys that vary along one curve: the point of the grid and what it actually removed.
_POINT_KEYS = ("requested_rate", "rates", "removed", "removed_share")
_CURVE = ["task", "label", "fold", "test_cohort", "evaluated_on", "split", "attribute", "metric", "scenario",
          "family"]  # fmt: skip
_RUN_FIELDS = ("run_id", "method", "modalities", "task", "label", "fold", "seed", "train_cohort", "test_cohort",
               "evaluated_on", "split", "selection", "train_missing_rate", "threshold_rule", "attribute")  # fmt: skip
_X_DECIMALS = 9
#: The tidy column naming a run's train-time missingness protocol, and its value for none.
TRAIN_MISSING = "train_missing"
NO_TRAIN_MISSING = "none"
_DIRECTION = {True: "higher is better", False: "lower is better"}


def train_missing_labels(table: pd.DataFrame) -> pd.Series:
    """Each row's train-time missingness protocol; ``none`` where the column is absent (older tables) or empty."""
    if TRAIN_MISSING not in table.columns:
        return pd.Series(NO_TRAIN_MISSING, index=table.index, dtype=object)
    return table[TRAIN_MISSING].map(lambda v: NO_TRAIN_MISSING if _blank(v) else str(v).strip()).astype(object)


def _blank(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == ""


def _family(params: str) -> str:
    try:
        p = json.loads(params or "{}")
    except json.JSONDecodeError:
        p = {}
    return json.dumps({k: v for k, v in p.items() if k not in _POINT_KEYS}, sort_keys=True)


def curve_points(missing: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per (run, label, attribute, metric, scenario family, point): draws averaged.

    Columns: the run fields, ``train_missing``, ``scenario``, ``family``, ``point`` (the ``scenario_params``
    text), ``x``, ``value`` (NaN if any draw is undefined), ``ci_low``, ``ci_high``, ``n``, ``n_pos``.
    """
    protocol = train_missing_labels(missing).to_numpy()  # read before normalise, which keeps schema columns only
    df = normalise(missing)
    df[TRAIN_MISSING] = protocol
    wanted = set(metrics) if metrics is not None else None
    no_curve = ["none", *(e.name for e in SCENARIOS.entries() if not getattr(e.obj, "curve", True))]
    mask = ~df["scenario"].isin(no_curve) & (df["group"] == "all")
    mask &= ~df["metric"].isin(SUMMARY_METRICS) & df["metric"].map(lambda m: HIGHER_IS_BETTER.get(m) is not None)
    if wanted is not None:
        mask &= df["metric"].isin(wanted) | (df["attribute"] != "all")
    df = df[mask].copy()
    if len(df) == 0:
        return pd.DataFrame(columns=[*_RUN_FIELDS, TRAIN_MISSING, "metric", "scenario", "family", "point", "x",
                                     "value", "ci_low", "ci_high", "n", "n_pos"])  # fmt: skip
    df["family"] = df["scenario_params"].map(_family)
    df["point"] = df["scenario_params"]
    df["val"] = df["value"].where(df["defined"], np.nan)
    keys = [*_RUN_FIELDS, TRAIN_MISSING, "metric", "scenario", "family", "point"]
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


def r_star(x, fusion_bound, fusion_value, best_single, higher_is_better: bool = True) -> tuple[float, bool]:
    """``(r*, crossed)``: the first rate where fusion stops being surely better than the best single modality.

    Higher-is-better metrics: ``fusion_bound`` is the lower bound and crossing means ``bound < best``;
    lower-is-better ones (gaps): the upper bound, crossing ``bound > best``. A rate with no defined
    single-modality value is skipped; an undefined fusion value (the method cannot score there) counts
    as crossed. ``(nan, False)`` when it never crosses.
    """
    for xi, bound, val, best in zip(x, fusion_bound, fusion_value, best_single):
        if not np.isfinite(best):
            continue
        if not np.isfinite(val) or (bound < best if higher_is_better else bound > best):
            return float(xi), True
    return float("nan"), False


def _mean_or_nan(v: pd.Series) -> float:
    return v.mean() if v.notna().all() else np.nan


def _same_protocol(rows: pd.DataFrame, protocol: str) -> tuple[pd.DataFrame, str]:
    """The rows trained with ``protocol``, else those trained with none (and the protocol used)."""
    for wanted in dict.fromkeys((protocol, NO_TRAIN_MISSING)):
        picked = rows[rows[TRAIN_MISSING] == wanted]
        if len(picked):
            return picked, wanted
    return rows.iloc[0:0], protocol


def _reference_runs(reference_rows: pd.DataFrame, modalities: str) -> tuple[pd.DataFrame, str]:
    """The reference method's rows over ``modalities``; else over the smallest set of modalities that holds
    them (a single-modality run against ``ehr+cxr``), ties by name. Returns the rows and their modalities."""
    if not len(reference_rows):
        return reference_rows, ""
    wanted = set(modalities.split("+"))
    sets = {m: set(m.split("+")) for m in reference_rows["modalities"].astype(str).unique()}
    holding = sorted((len(players), m) for m, players in sets.items() if wanted <= players)
    if not holding:
        return reference_rows.iloc[0:0], ""
    chosen = holding[0][1]
    return reference_rows[reference_rows["modalities"].astype(str) == chosen], chosen


def validation_scores(run_dirs: Iterable[Path]) -> pd.DataFrame:
    """``run_id, label, value``: each run's validation AUROC per label (``all``: the binary task, or the
    macro mean over phenotype labels) from ``predictions_val.csv`` — what r*'s comparator is chosen on.
    Runs whose validation predictions are missing, unreadable or of length of stay are left out."""
    out: list[dict] = []
    for run_dir in run_dirs:
        try:
            run_id = load_run_info(Path(run_dir)).run_id
            pred = read_predictions(Path(run_dir), "val")
            spec = task_spec(pred, predictions_path(Path(run_dir), "val"))
        except (MmfairError, OSError, ValueError) as exc:
            log.info("%s: no validation scores for r*'s comparator (%s)", run_dir, exc)
            continue
        if spec.kind == "multiclass":
            continue
        values = {}
        for label, label_col, score_col in spec.targets:
            y, sc = pred[label_col].to_numpy(dtype=float), pred[score_col].to_numpy(dtype=float)
            ok = np.isfinite(sc) & np.isfinite(y)
            values[label] = float(M.auroc(y[ok], sc[ok])) if ok.all() else float("nan")
        if spec.kind == "multilabel":
            values["all"] = float(np.mean(list(values.values())))
        out += [{"run_id": run_id, "label": k, "value": v} for k, v in values.items()]
    return pd.DataFrame(out, columns=["run_id", "label", "value"])


def _comparator(single: pd.DataFrame, x: np.ndarray, label: str, validation: pd.DataFrame | None) -> tuple[pd.DataFrame, dict]:
    """The single-modality rows of r*'s comparator (chosen on validation, see the module docstring) and what
    to record about the choice (``reason`` when there is none)."""
    info: dict = {}
    eligible, excluded = [], []
    for (method, mods), block in single.groupby(["method", "modalities"], sort=True):
        per_x = block.groupby("x")["value"].agg(_mean_or_nan).reindex(x)
        (eligible if per_x.notna().all() else excluded).append((method, mods))
    if excluded:
        info["not_comparable"] = [f"{m} ({mods})" for m, mods in excluded]
    if not eligible:
        info["reason"] = ("no single-modality run on this fold" if not excluded else
                          "no single-modality run scores every evaluated stay at every rate")  # fmt: skip
        return single.iloc[0:0], info
    val = {} if validation is None or not len(validation) else (
        validation[validation["label"] == label].groupby("run_id")["value"].first().to_dict())
    scored = []
    for method, mods in eligible:
        runs = sorted(set(single.loc[(single["method"] == method) & (single["modalities"] == mods), "run_id"]))
        vals = [val[r] for r in runs if r in val and np.isfinite(val[r])]
        if vals:
            scored.append((-float(np.mean(vals)), str(method), str(mods), runs))
    if not scored:
        info["reason"] = "no validation scores to choose the single-modality comparator on"
        return single.iloc[0:0], info
    neg, method, mods, runs = min(scored)
    info.update(comparator=f"{method} ({mods})", comparator_runs=runs, comparator_val_auroc=round(-neg, 6))
    return single[(single["method"] == method) & (single["modalities"] == mods)], info


def summarise(missing: pd.DataFrame, *, reference: str = BASELINE_METHOD, metrics: Iterable[str] | None = DEFAULT_METRICS,
              validation: pd.DataFrame | None = None) -> pd.DataFrame:
    """Summary rows (``relative_robustness``, ``effective_robustness``, ``r_star``) of every curve.

    ``missing`` is a tidy table of missing-modality rows (summary rows in it are ignored); ``metrics``
    limits the overall metrics summarised (gap rows, ``attribute != all``, are always taken);
    ``validation`` (:func:`validation_scores`) is what r*'s single-modality comparator is chosen on.
    """
    pts = curve_points(missing, metrics)
    rows: list[dict] = []
    if len(pts) == 0:
        return to_frame(rows)
    for key, curve_block in pts.groupby(_CURVE, sort=True, dropna=False):
        ctx = dict(zip(_CURVE, key))
        for _, run in curve_block.groupby("run_id", sort=True):
            rows += _run_summaries(run, curve_block, ctx, reference, validation)
    return to_frame(rows)


def _run_summaries(run: pd.DataFrame, curve_block: pd.DataFrame, ctx: dict, reference: str,
                   validation: pd.DataFrame | None) -> list[dict]:  # fmt: skip
    """The summary rows of one run's curve (``curve_block``: the points of every run on the same curve)."""
    metric = ctx["metric"]
    direction = HIGHER_IS_BETTER.get(metric)
    family = json.loads(ctx["family"])
    first = run.iloc[0]
    protocol = str(first[TRAIN_MISSING])
    clean = run[run["x"] == 0]
    base = {f: first[f] for f in _RUN_FIELDS}
    for col in ("fold", "seed", "train_missing_rate"):
        base[col] = None if base[col] == "" else base[col]
    base.update(scenario=ctx["scenario"], missing_rate=None, draw=0, draw_seed=None, group="all")
    base[TRAIN_MISSING] = protocol
    n = int(clean["n"].iloc[0]) if len(clean) and pd.notna(clean["n"].iloc[0]) else None
    n_pos = int(clean["n_pos"].iloc[0]) if len(clean) and pd.notna(clean["n_pos"].iloc[0]) else None
    x, m = _curve(run)
    rows: list[dict] = []

    def emit(name: str, value: float, extra: dict, higher: bool | None) -> None:
        params = {**family, "of": metric, "direction": _DIRECTION[bool(direction)], **extra}
        row = make_row(**base, scenario_params=json.dumps(params, sort_keys=True), metric=name,
                       value=value, n=n, n_pos=n_pos, defined=bool(np.isfinite(value)))  # fmt: skip
        row["higher_is_better"] = higher
        rows.append(row)

    emit("relative_robustness", relative_robustness(x, m), {"curve_rates": x.tolist()}, direction)
    er, er_extra = _effective_robustness_of(run, curve_block[curve_block["method"] == reference], reference, protocol)
    emit("effective_robustness", er, er_extra, direction)
    if "+" in str(first["modalities"]):
        mods = curve_block["modalities"].astype(str)
        singles = curve_block[(mods != "") & ~mods.str.contains("+", regex=False)]
        value, extra = _r_star_of(run, singles, protocol, x, m, str(ctx["label"]), validation, direction is True)
        emit("r_star", value, extra, True)
    return rows


def _effective_robustness_of(run: pd.DataFrame, reference_block: pd.DataFrame, reference: str,
                             protocol: str) -> tuple[float, dict]:  # fmt: skip
    """Effective robustness of one run's curve against the reference curve (same modalities and train-time
    protocol), and what ``scenario_params`` records about it."""
    ref_candidates, ref_modalities = _reference_runs(reference_block, str(run.iloc[0]["modalities"]))
    ref_rows, ref_protocol = _same_protocol(ref_candidates, protocol)
    ref_pts = ref_rows.groupby("point")["value"].agg(_mean_or_nan)
    ref_x = ref_rows.groupby("point")["x"].first()
    common = [p for p in run["point"] if p in ref_pts.index]
    extra: dict = {"reference": reference, "reference_runs": sorted(set(ref_rows["run_id"])),
                   "reference_modalities": ref_modalities, "reference_train_missing": ref_protocol}  # fmt: skip
    if not common:
        extra["reason"] = f"no {reference} curve on this fold"
        return float("nan"), extra
    sub = run.set_index("point").loc[common]
    order = np.argsort(sub["x"].to_numpy(), kind="mergesort")
    if sub["x"].to_numpy()[order][0] != 0:
        extra["reason"] = "no shared clean point"
        return float("nan"), extra
    er = effective_robustness(sub["value"].to_numpy()[order], ref_pts.loc[common].to_numpy()[order])
    extra["curve_rates"] = [float(v) for v in ref_x.loc[common].to_numpy()[order]]
    return er, extra


def _r_star_of(run: pd.DataFrame, singles: pd.DataFrame, protocol: str, x: np.ndarray, m: np.ndarray, label: str,
               validation: pd.DataFrame | None, higher: bool) -> tuple[float, dict]:  # fmt: skip
    """r* of one multimodal run's curve against its single-modality comparator, and what ``scenario_params``
    records about it."""
    players = str(run.iloc[0]["modalities"]).split("+")
    single, single_protocol = _same_protocol(singles[singles["modalities"].isin(players)], protocol)
    chosen, choice = _comparator(single, x, label, validation)
    best_by_x = chosen.groupby("x")["value"].agg(_mean_or_nan)
    bound_col = "ci_low" if higher else "ci_high"
    bound = run.groupby("x", sort=True)[bound_col].mean().reindex(x).to_numpy()
    best = best_by_x.reindex(x).to_numpy(dtype=float) if len(best_by_x) else np.full(x.size, np.nan)
    extra: dict = {"curve_rates": x.tolist(), "single_train_missing": single_protocol, **choice}
    if "reason" in choice:
        return float("nan"), extra
    if not np.any(np.isfinite(bound)):
        extra["reason"] = "no bootstrap interval (bootstrap=0)"
        return float("nan"), extra
    value, crossed = r_star(x, bound, m, best, higher)
    extra["crossed"] = crossed
    if not crossed:
        side = "lower bound never below" if higher else "upper bound never above"
        extra["reason"] = f"{side} the best single modality up to {x[-1]:g}"
    return value, extra


def update_summaries(path: Path, *, reference: str = BASELINE_METHOD, metrics: Iterable[str] | None = DEFAULT_METRICS,
                     validation: pd.DataFrame | None = None) -> pd.DataFrame:
    """Recompute every summary row of the tidy table at ``path`` from its curve rows (idempotent).

    All existing summary rows are dropped first (a summary depends on every run of its fold, so stale
    ones must not survive a rerun with other rates or runs); the file is rewritten under its lock, atomically.
    Returns the summary rows.
    """
    found: list[pd.DataFrame] = []

    def replace_summaries(table: pd.DataFrame) -> pd.DataFrame:
        kept = table[~table["metric"].isin(SUMMARY_METRICS)]
        found.append(summarise(kept, reference=reference, metrics=metrics, validation=validation))
        return normalise(pd.concat([kept, found[0]], ignore_index=True)) if len(found[0]) else kept

    rewrite_results(Path(path), replace_summaries)
    return found[0]
