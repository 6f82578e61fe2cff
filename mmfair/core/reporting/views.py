"""The numbers behind each figure and each plain-language reading: tidy rows → small numeric frames.

Pure functions of the tidy tables (DESIGN §3.4): nothing is re-scored, and every group-level frame has the
small-cell rule (:mod:`.suppression`) applied here, so no figure can show what a table would hide. A
suppressed group is dropped from a frame entirely (its name included): figures show no trace of it.

One *condition* per figure: rows differ by checkpoint selection rule, threshold rule, test cohort, the stays
evaluated and their weighting, and these are never pooled. :func:`default_condition` keeps the default of each
(``overall``, ``val-youden``, ``full``, ``all``, ``stay``, else the most common value) and names the others.
Training conditions that differ from their defaults (train cohort, split, train-time missingness) are part of
the method's label (:func:`mmfair.core.reporting.tables.label_conditions`), so they are never pooled either.
"""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from mmfair.core.evaluation import stats
from mmfair.core.evaluation.robustness_summary import curve_points
from mmfair.core.reporting.fairness import complement
from mmfair.core.reporting.suppression import is_small, suppress_block
from mmfair.core.reporting.tables import label_conditions

#: Evaluation conditions of a row and the value a report shows by default.
CONDITION_DEFAULTS = {"selection": "overall", "threshold_rule": "val-youden", "test_cohort": "full",
                      "weighting": "stay"}  # fmt: skip
#: How a method is labelled when it was not scored on every test stay (``evaluated_on``).
EVALUATED_ON = {"with_cxr": "stays with a CXR", "common": "common stays", "unrecorded": "stays unrecorded"}
#: Single-modality methods (a run with one modality is one too).
SINGLE = ("ehr", "cxr")
#: Gaps drawn as curves and in the scatter (tidy metric → label); lower is better for all.
GAPS = {"auroc_gap": "AUROC gap", "equalized_odds_difference": "EO diff", "demographic_parity_difference": "DP diff"}
#: Share of a fold's stays in test over those in training (5 folds: 1 test, 1 validation, 3 training), for the
#: corrected resampled t-test (Nadeau & Bengio 2003).
TEST_TRAIN_RATIO = 1 / 3


def default_condition(df: pd.DataFrame, columns=tuple(CONDITION_DEFAULTS)) -> tuple[pd.DataFrame, list[str]]:
    """Rows of one evaluation condition and the names of the conditions left out (``column=value``)."""
    others: list[str] = []
    for col in columns:
        if len(df) == 0 or col not in df.columns:
            continue
        values = df[col].astype(str)
        present = values.unique().tolist()
        if len(present) < 2:
            continue
        keep = CONDITION_DEFAULTS.get(col)
        keep = keep if keep in present else values.value_counts().index[0]
        others += [f"{col}={v}" for v in sorted(present) if v != keep]
        df = df[values == keep]
    return df, others


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    """Methods named with their training conditions; per method, the rows scored on every test stay where it
    has them, else those of its other stay set, named in the label (e.g. ``cxr [stays with a CXR]``)."""
    if len(df) == 0:
        return df
    df = label_conditions(df)
    on = df["evaluated_on"].astype(str).replace("", "all")
    has_all = set(df.loc[on == "all", "method"])
    keep = (on == "all") | ~df["method"].isin(has_all)
    df, on = df[keep].copy(), on[keep]
    if on.nunique() > 1:  # one stay set for every method needs no tag (the caption says which)
        df["method"] = [m if o == "all" else f"{m} [{EVALUATED_ON.get(o, o)}]" for m, o in zip(df["method"], on)]
    return df


def is_single(method: str, modalities: str) -> bool:
    return str(method).split(" ")[0] in SINGLE or "+" not in str(modalities)


# ---------------------------------------------------------------------------------------------- leaderboard


def leaderboard(metrics: pd.DataFrame, metric: str = "auroc") -> tuple[pd.DataFrame, list[str]]:
    """Per task and method: the whole-task clean value with its interval (mean of runs; bounds averaged)."""
    rows = metrics[(metrics["metric"] == metric) & (metrics["label"] == "all") & (metrics["group"] == "all")
                   & (metrics["scenario"] == "none") & metrics["defined"]]  # fmt: skip
    rows, others = default_condition(_labelled(rows))
    cols = ["task", "method", "modalities", "value", "lo", "hi", "runs", "n"]
    if len(rows) == 0:
        return pd.DataFrame(columns=cols), others
    out = rows.groupby(["task", "method", "modalities"], sort=True).agg(
        value=("value", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean"), runs=("run_id", "nunique"),
        n=("n", "min")).reset_index()  # fmt: skip
    return out.sort_values(["task", "value"], ascending=[True, False], kind="mergesort")[cols], others


def rank_blocks(metrics: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """Blocks (task × label; a phenotype's labels, not their mean) × methods, complete blocks only."""
    rows = metrics[(metrics["metric"] == metric) & (metrics["group"] == "all") & (metrics["scenario"] == "none")]
    rows, _ = default_condition(_labelled(rows))
    multi = set(rows.loc[rows["label"] != "all", "task"])
    rows = rows[~((rows["label"] == "all") & rows["task"].isin(multi))]
    if len(rows) == 0:
        return pd.DataFrame()
    return stats.blocks_from_tidy(rows, metric, ("task", "label")).dropna(axis=0, how="any")


def critical_difference(metrics: pd.DataFrame, min_blocks: int = 2) -> tuple[pd.Series, float, int] | None:
    """Mean ranks, Nemenyi critical difference and block count, or ``None`` with < 3 methods or < ``min_blocks``."""
    table = rank_blocks(metrics)
    if table.shape[1] < 3 or table.shape[0] < min_blocks:
        return None
    return stats.mean_ranks(table, True), stats.nemenyi_cd(table.shape[1], table.shape[0]), int(table.shape[0])


# ------------------------------------------------------------------------------------ fusion vs single


def _params(text: str) -> dict:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}


def corrected_t_interval(d: np.ndarray, ratio: float = TEST_TRAIN_RATIO, alpha: float = 0.05) -> tuple[float, float]:
    """Interval of the mean of per-run differences with the Nadeau–Bengio corrected variance
    ``(1/J + n_test/n_train) s²`` on J − 1 degrees of freedom (runs share training stays, so the plain t
    interval is too narrow)."""
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float("nan"), float("nan")
    half = sps.t.ppf(1 - alpha / 2, d.size - 1) * np.sqrt((1 / d.size + ratio) * d.var(ddof=1))
    return float(d.mean() - half), float(d.mean() + half)


def paired_comparisons(fairness: pd.DataFrame) -> pd.DataFrame:
    """Every paired AUROC comparison eval-fair wrote (``auroc_difference``, all stays), oriented as fusion
    minus single modality where one side is a single-modality model, else method minus reference.

    Columns: task, label, fusion, other, kind (``vs single`` / ``vs fusion``), diff, lo, hi, p, n, runs,
    t_lo, t_hi (corrected resampled t interval over runs, NaN with one run), p_adj (Holm across the rows with
    a p: one run each), verdict (from the interval over runs where there is one, else the bootstrap's).
    """
    cols = ["task", "label", "fusion", "other", "kind", "diff", "lo", "hi", "p", "n", "runs", "t_lo", "t_hi", "p_adj",
            "verdict"]
    rows = fairness[fairness["metric"].isin(["auroc_difference", "auroc_difference_p"])
                    & (fairness["attribute"] == "all")]  # fmt: skip
    rows, _ = default_condition(_labelled(rows), ("selection", "test_cohort", "weighting"))
    if len(rows) == 0:
        return pd.DataFrame(columns=cols)
    rows = rows.assign(reference=rows["scenario_params"].map(lambda t: str(_params(t).get("reference", ""))))
    key = ["run_id", "task", "label", "reference"]
    p_of = {tuple(r[k] for k in key): r["value"] for _, r in rows[rows["metric"] == "auroc_difference_p"].iterrows()}
    main = rows[(rows["metric"] == "auroc_difference") & rows["defined"]].copy()
    main["p"] = [p_of.get(tuple(r[k] for k in key), np.nan) for _, r in main.iterrows()]
    flip = [is_single(m, mod) for m, mod in zip(main["method"], main["modalities"])]
    main["fusion"] = np.where(flip, main["reference"], main["method"])
    main["other"] = np.where(flip, main["method"], main["reference"])
    main["kind"] = np.where(flip, "vs single", "vs fusion")
    sign = np.where(flip, -1.0, 1.0)
    main["d"], main["l"], main["h"] = sign * main["value"], np.where(flip, -main["ci_high"], main["ci_low"]), \
        np.where(flip, -main["ci_low"], main["ci_high"])  # fmt: skip
    out = []
    for (task, label, fusion, other, kind), b in main.groupby(["task", "label", "fusion", "other", "kind"], sort=True):
        t_lo, t_hi = corrected_t_interval(b["d"].to_numpy())
        out.append({"task": task, "label": label, "fusion": fusion, "other": other, "kind": kind,
                    "diff": b["d"].mean(), "lo": b["l"].mean(), "hi": b["h"].mean(),
                    "p": b["p"].iloc[0] if len(b) == 1 else np.nan, "n": b["n"].min(), "runs": b["run_id"].nunique(),
                    "t_lo": t_lo, "t_hi": t_hi})  # fmt: skip
    df = pd.DataFrame(out, columns=cols[:-2])
    df["p_adj"] = stats.holm(df["p"].to_numpy(dtype=float)) if len(df) else []
    # over several runs the verdict follows the interval over runs; with one run, the bootstrap interval
    over_runs = np.isfinite(df["t_lo"].to_numpy(dtype=float))
    df["verdict"] = [verdict(tl, th) if o else verdict(lo, hi)
                     for o, tl, th, lo, hi in zip(over_runs, df["t_lo"], df["t_hi"], df["lo"], df["hi"])]  # fmt: skip
    return df.reset_index(drop=True)


def verdict(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undefined"
    return "fusion better" if lo > 0 else "fusion worse" if hi < 0 else "no difference shown"


# ----------------------------------------------------------------------------------------- missingness


def missing_curves(missing: pd.DataFrame, gaps: bool = False) -> pd.DataFrame:
    """Curve points (draws averaged within a run, then runs averaged): method, mechanism, metric, attribute,
    x (realised missing rate), value, lo, hi, runs. ``gaps``: the fairness-gap curves (eval-missing
    --attribute) instead of AUROC/AUPRC."""
    cols = ["method", "mechanism", "metric", "attribute", "x", "value", "lo", "hi", "runs"]
    if len(missing) == 0:
        return pd.DataFrame(columns=cols)
    wanted = list(GAPS) if gaps else ["auroc", "auprc"]
    scope = (missing["attribute"] != "all") if gaps else (missing["attribute"] == "all")
    pts = curve_points(_labelled(missing[missing["metric"].isin(wanted) & scope]), wanted)
    if len(pts) == 0:
        return pd.DataFrame(columns=cols)
    pts = pts[(pts["label"] == "all") & (pts["attribute"] != "all" if gaps else pts["attribute"] == "all")]
    pts = pts[pts["metric"].isin(list(GAPS) if gaps else ["auroc", "auprc"])]
    pts, _ = default_condition(pts, ("selection", "test_cohort"))
    if len(pts) == 0:
        return pd.DataFrame(columns=cols)
    fam = pts["family"].map(_params)
    mech = [s + (f" by {p['by']}" if p.get("by") else "") + (f" ({p['modality']} removed)" if p.get("modality") else "")
            for s, p in zip(pts["scenario"], fam)]  # fmt: skip
    pts = pts.assign(mechanism=mech, x=pts["x"].round(3))
    out = pts.groupby(["method", "mechanism", "metric", "attribute", "x"], sort=True).agg(
        value=("value", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean"), runs=("run_id", "nunique"),
    ).reset_index()  # fmt: skip
    return out[cols]


def dropout_grid(missing: pd.DataFrame) -> pd.DataFrame:
    """Train-time missingness × test-time MCAR rate: mean AUROC per method (rows: method and how it was
    trained, columns: the realised test missing rate), when some run was trained with missingness."""
    rows = missing[(missing["metric"] == "auroc") & (missing["scenario"] == "mcar") & (missing["label"] == "all")
                   & (missing["attribute"] == "all")]  # fmt: skip
    if len(rows) == 0 or set(rows["train_missing"].astype(str).replace("", "none")) <= {"none"}:
        return pd.DataFrame()
    pts = curve_points(rows, ["auroc"])
    pts = pts.assign(train=pts["train_missing"].astype(str).replace("", "none"), x=pts["x"].round(2))
    grid = pts.groupby(["method", "train", "x"])["value"].mean().unstack("x")
    grid.columns = [f"test {x:.0%}" for x in grid.columns]
    return grid.reset_index().rename(columns={"train": "trained with"})


# -------------------------------------------------------------------------------------------- fairness


def hidden_groups(rows: pd.DataFrame, min_group_size: int) -> set[tuple[str, str, str]]:
    """(method, attribute, group) cells suppressed in any of the method's runs for any label (primary +
    complementary rule, per run × label × attribute block, as in the tables): a group hidden in one run of a
    method is hidden for the whole method, in every figure."""
    hidden: set[tuple[str, str, str]] = set()
    counts = rows[rows["group"] != "all"].drop_duplicates(["method", "run_id", "label", "attribute", "group"])
    for (method, _, _, attribute), block in counts.groupby(["method", "run_id", "label", "attribute"], sort=False):
        small = is_small(block["n"], block["n_pos"], min_group_size)
        flags = complement(attribute, block["group"].to_numpy(), block["n"], small)
        hidden |= {(method, attribute, g) for g, f in zip(block["group"], flags) if f}
    return hidden


def group_estimates(fairness: pd.DataFrame, min_group_size: int,
                    metrics=("auroc", "tpr", "fpr")) -> tuple[pd.DataFrame, int, list[str]]:  # fmt: skip
    """Per method × attribute × group: each metric with its interval (label ``all``, or a phenotype's first
    label), suppressed cells dropped. Returns the frame, the number of groups suppressed for some method
    and the other conditions."""
    cols = ["method", "attribute", "group", "metric", "value", "lo", "hi", "n"]
    rows = fairness[(fairness["group"] != "all") & (fairness["attribute"] != "all")
                    & (fairness["scenario"] == "none")]  # fmt: skip
    rows, others = default_condition(_labelled(rows))
    if len(rows) == 0:
        return pd.DataFrame(columns=cols), 0, others
    hidden = hidden_groups(rows, min_group_size)
    label = "all" if (rows["label"] == "all").any() else sorted(rows["label"].unique())[0]
    keep = rows[(rows["label"] == label) & rows["metric"].isin(list(metrics)) & rows["defined"]]
    keep = keep[[(m, a, g) not in hidden for m, a, g in zip(keep["method"], keep["attribute"], keep["group"])]]
    out = keep.groupby(["method", "attribute", "group", "metric"], sort=True).agg(
        value=("value", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean"), n=("n", "min")).reset_index()
    return out[cols], len({(a, g) for _, a, g in hidden}), others


def fairness_points(metrics: pd.DataFrame, fairness: pd.DataFrame, min_group_size: int,
                    gap: str = "equalized_odds_difference") -> pd.DataFrame:  # fmt: skip
    """Per method × attribute: clean AUROC and a gap (label ``all``), and whether the point is on the Pareto
    front of its attribute (no other point with AUROC ≥ and gap ≤, one of them strictly). Descriptive only."""
    cols = ["method", "attribute", "auroc", "gap", "pareto"]
    board, _ = leaderboard(metrics)
    gaps = fairness[(fairness["metric"] == gap) & (fairness["group"] == "all") & (fairness["label"] == "all")
                    & (fairness["scenario"] == "none") & fairness["defined"]]  # fmt: skip
    gaps, _ = default_condition(_labelled(gaps))
    gaps = gaps[pd.to_numeric(gaps["n"], errors="coerce").fillna(0) >= min_group_size]
    if len(board) == 0 or len(gaps) == 0:
        return pd.DataFrame(columns=cols)
    g = gaps.groupby(["method", "attribute"], sort=True)["value"].mean().rename("gap").reset_index()
    au = board.groupby("method")["value"].mean().rename("auroc")
    df = g.join(au, on="method").dropna(subset=["auroc"])
    df["pareto"] = False
    for attribute, block in df.groupby("attribute"):
        for i, r in block.iterrows():
            dominated = ((block["auroc"] >= r["auroc"]) & (block["gap"] <= r["gap"])
                         & ((block["auroc"] > r["auroc"]) | (block["gap"] < r["gap"]))).any()  # fmt: skip
            df.loc[i, "pareto"] = not dominated
    return df[cols].reset_index(drop=True)


def worst_gaps(fairness: pd.DataFrame, gap: str = "equalized_odds_difference") -> tuple[pd.DataFrame, list[str]]:
    """Per method: the attribute with the largest gap (label ``all``) and its interval."""
    rows = fairness[(fairness["metric"] == gap) & (fairness["group"] == "all") & (fairness["scenario"] == "none")
                    & fairness["defined"] & (fairness["label"] == "all")]  # fmt: skip
    rows, others = default_condition(_labelled(rows))
    cols = ["method", "attribute", "value", "lo", "hi"]
    if len(rows) == 0:
        return pd.DataFrame(columns=cols), others
    agg = rows.groupby(["method", "attribute"]).agg(value=("value", "mean"), lo=("ci_low", "mean"),
                                                    hi=("ci_high", "mean")).reset_index()  # fmt: skip
    top = agg.sort_values("value", ascending=False, kind="mergesort").groupby("method", sort=True).head(1)
    return top.sort_values("value", ascending=False, kind="mergesort")[cols].reset_index(drop=True), others


# ---------------------------------------------------------------------------------- modality addition


def _players(modalities: str) -> frozenset:
    return frozenset(str(modalities).split("+"))


def addition_steps(metrics: pd.DataFrame, fairness: pd.DataFrame) -> pd.DataFrame:
    """Each step of an incremental path: a run on modalities S and a run of a method M on S plus one modality
    (same task, fold, seed, training conditions and evaluated stays; S's run is M's own where there is one,
    else the single-modality model): the change in AUROC and in each gap per attribute. Point differences of
    the two runs' values (not paired resamples: the tidy tables hold no replicates; the report adds paired
    intervals from the runs' predictions, :func:`.predictions.addition_intervals`). ``run_before`` and
    ``run_after`` name the two runs."""
    cols = ["task", "fold", "seed", "stays", "method", "from", "added", "to", "run_before", "run_after", "attribute",
            "quantity", "before", "after", "change"]  # fmt: skip
    board = metrics[(metrics["metric"] == "auroc") & (metrics["label"] == "all") & (metrics["group"] == "all")
                    & (metrics["scenario"] == "none") & metrics["defined"]]  # fmt: skip
    board, _ = default_condition(board)
    gaps = fairness[fairness["metric"].isin(list(GAPS)) & (fairness["group"] == "all") & (fairness["label"] == "all")
                    & (fairness["scenario"] == "none") & fairness["defined"]]  # fmt: skip
    gaps, _ = default_condition(gaps)
    out = []
    # like with like: the same training conditions and the same evaluated stays on both sides of a step
    same = ["task", "fold", "seed", "train_cohort", "split", "train_missing", "evaluated_on"]
    for key, runs in board.groupby(same, sort=True):
        runs = runs.drop_duplicates("run_id")
        for big in runs.itertuples():
            players = _players(big.modalities)
            for added in sorted(players) if len(players) > 1 else ():
                rest = players - {added}
                small = runs[[_players(m) == rest for m in runs["modalities"]]]
                pick = small[small["method"] == big.method]
                pick = pick if len(pick) else small[small["method"].isin(SINGLE)] if len(rest) == 1 else pick
                if len(pick) == 0:
                    continue
                a = pick.iloc[0]
                base = {"task": key[0], "fold": key[1], "seed": key[2], "stays": key[-1], "method": big.method,
                        "from": a["modalities"], "added": added, "to": big.modalities, "run_before": a["run_id"],
                        "run_after": big.run_id}  # fmt: skip
                out.append({**base, "attribute": "all", "quantity": "AUROC", "before": a["value"], "after": big.value,
                            "change": big.value - a["value"]})  # fmt: skip
                ga, gb = gaps[gaps["run_id"] == a["run_id"]], gaps[gaps["run_id"] == big.run_id]
                ga, gb = ga[ga["evaluated_on"] == key[-1]], gb[gb["evaluated_on"] == key[-1]]
                for (attribute, metric), x in ga.groupby(["attribute", "metric"], sort=True):
                    y = gb[(gb["attribute"] == attribute) & (gb["metric"] == metric)]
                    if len(y):
                        out.append({**base, "attribute": attribute, "quantity": GAPS[metric],
                                    "before": x["value"].mean(), "after": y["value"].mean(),
                                    "change": y["value"].mean() - x["value"].mean()})  # fmt: skip
    return pd.DataFrame(out, columns=cols)


# -------------------------------------------------------------------------------------------- Shapley


def shapley_values(missing: pd.DataFrame, min_group_size: int) -> pd.DataFrame:
    """φ per method × attribute × group × player (label ``all``), groups suppressed per run block dropped."""
    cols = ["method", "attribute", "group", "player", "value", "lo", "hi"]
    rows = missing[(missing["metric"] == "shapley") & (missing["label"] == "all") & missing["defined"]]
    if len(rows) == 0:
        return pd.DataFrame(columns=cols)
    rows = _labelled(rows)
    hidden: set[tuple] = set()
    counts = rows[rows["attribute"] != "all"].drop_duplicates(["run_id", "attribute", "group"])
    for _, block in counts.groupby(["run_id", "attribute"], sort=False):
        flags = suppress_block(block["group"].to_numpy(), block["n"], block["n_pos"], min_group_size)
        hidden |= {(a, g) for a, g, f in zip(block["attribute"], block["group"], flags) if f}
    rows = rows[[(a, g) not in hidden for a, g in zip(rows["attribute"], rows["group"])]]
    out = rows.groupby(["method", "attribute", "group", "modalities"], sort=True).agg(
        value=("value", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean")).reset_index()
    return out.rename(columns={"modalities": "player"})[cols]


def missing_subset_runs(metrics: pd.DataFrame) -> list[str]:
    """The ``mmfair train --modalities …`` commands whose runs a fusion run's Shapley values still lack."""
    runs = metrics[(metrics["metric"] == "auroc") & (metrics["scenario"] == "none")]
    runs = runs.drop_duplicates("run_id")
    have = {(r.task, r.fold, r.seed, _players(r.modalities)) for r in runs.itertuples()}
    commands = []
    for r in runs.itertuples():
        players = _players(r.modalities)
        if len(players) < 2:
            continue
        for k in range(1, len(players)):
            for subset in combinations(sorted(players), k):
                if (r.task, r.fold, r.seed, frozenset(subset)) not in have:
                    commands.append(f"mmfair train --fusion {r.method} --modalities {','.join(subset)} "
                                    f"--task {r.task} --fold {r.fold} --seed {r.seed}")  # fmt: skip
    return sorted(set(commands))
