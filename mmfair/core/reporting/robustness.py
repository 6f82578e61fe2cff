"""The robustness-summary tables: relative/effective robustness and r* per method and scenario, of AUROC/AUPRC
and of the fairness gaps.

Pure functions of the tidy ``missing`` table (the summary rows that
:func:`mmfair.core.evaluation.robustness_summary.update_summaries` writes); nothing is recomputed. The AUROC/AUPRC
table shows whole-task rows (``label=all``, ``attribute=all``); the gap table one row per label (binary
tasks: ``all``; phenotypes: each label, as in the fairness-gap table), attribute and gap. Summary rows
carry no interval: a cell is the value of one run, or ``mean ± sd (k=…)`` across runs (seeds/folds).
Runs that differ in their train-time missingness (``train missing``) are never pooled into one cell.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mmfair.core.config import BASELINE_METHOD

_METRICS = {"auroc": "AUROC", "auprc": "AUPRC"}
_SUMMARIES = {"relative_robustness": "RR", "effective_robustness": "ER", "r_star": "r*"}
#: Display name of the run's train-time missingness column (``none``, ``dropout=0.3``, ``rate=0.5``).
TRAIN_MISSING_HEADER = "train missing"
#: One condition per row (issue 11): the curves' test cohort and evaluated stays are columns, never pooled.
_KEYS = ["method", "modalities", "task", TRAIN_MISSING_HEADER, "scenario", "modality", "test_cohort", "evaluated_on"]
#: Gaps whose curves are summarised, in display order (tidy metric → label); all lower is better.
GAP_SUMMARIES = {"auroc_gap": "AUROC gap", "equalized_odds_difference": "EO diff",
                 "demographic_parity_difference": "DP diff"}  # fmt: skip

TITLE = "Robustness summaries"
DESCRIPTION = ("How each method's test metric holds up as the modality goes missing (raw values, never "
               "min–max normalised), per mechanism; from the curves in `missing.csv`. Runs trained with "
               "missingness (train missing: CXR dropout or a fixed share of training stays without it) are "
               "rows of their own.")  # fmt: skip
GAP_TITLE = "Robustness summaries of the fairness gaps"
GAP_DESCRIPTION = ("The same summaries for the between-group gaps of each attribute as the modality goes missing "
                   "(eval-missing --attribute; lower is better for every gap).")  # fmt: skip
FOOTNOTE_RR = ("RR (relative robustness): area under metric-vs-missing-rate (trapezoid rule) divided by the "
               "rate span — the curve's mean height, in the metric's units.")  # fmt: skip
FOOTNOTE_ER = ("ER (effective robustness): mean gain over the reference method's curve (`{ref}`) after "
               "shifting it to the method's own clean score; 0 for the reference itself. The reference (and, "
               "for r*, the single-modality models) are runs with the same train missing where there are any, "
               "else runs trained without.")  # fmt: skip
FOOTNOTE_RSTAR = ("r*: the smallest evaluated missing rate at which the fusion method's lower 95 % bound falls "
                  "below the value of the single-modality model chosen on validation (among those that score every "
                  "evaluated stay at every rate), on the same stays and removals (fusion stops helping there); "
                  "'never (≤ x)': it never does up to rate x; shown for fusion methods only.")  # fmt: skip
FOOTNOTE_GAP_DIRECTION = ("Lower is better for every gap: RR is the gap's mean height over the missing rates, a "
                          "positive ER a gap that grows faster than the reference's; r* is the first rate at which "
                          "the fusion method's upper 95 % bound rises above the smallest single-modality gap "
                          "(fusion no longer surely fairer).")  # fmt: skip
FOOTNOTE_NA = "n/a: undefined (no reference curve, no single-modality run, no interval, or an undefined point)."


def _params(text: str) -> dict:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}


def _num(v: float) -> str:
    return f"{0.0 if abs(v) < 5e-4 else v:.3f}"  # no "-0.000"


def _value_cell(rows: pd.DataFrame) -> str:
    if len(rows) == 0:
        return "–"
    per_run = rows.groupby("run_id")["value"].mean()
    defined = rows.groupby("run_id")["defined"].all()
    vals = per_run[defined].dropna().to_numpy()
    if vals.size == 0:
        return "n/a"
    mark = "‡" if vals.size < len(per_run) else ""
    if vals.size == 1:
        return _num(vals[0]) + mark
    return f"{_num(vals.mean())} ± {_num(vals.std(ddof=1))} (k={vals.size}){mark}"


def _r_star_cell(rows: pd.DataFrame) -> str:
    if len(rows) == 0:
        return "–"
    crossed, never, rmax = [], 0, []
    for _, r in rows.iterrows():
        p = _params(r["scenario_params"])
        if r["defined"] and np.isfinite(r["value"]):
            crossed.append(float(r["value"]))
        elif p.get("crossed") is False:
            never += 1
            if p.get("curve_rates"):
                rmax.append(max(p["curve_rates"]))
    if not crossed and not never:
        return "n/a"
    upto = f"{min(rmax):.3g}" if rmax else "max"
    if not crossed:
        return f"never (≤ {upto})"
    vals = np.asarray(crossed)
    text = _num(vals[0]) if vals.size == 1 else f"{_num(vals.mean())} ± {_num(vals.std(ddof=1))} (k={vals.size})"
    return text + (f"; never in {never} run{'s' if never > 1 else ''} (≤ {upto})" if never else "")


def _summary_rows(missing: pd.DataFrame, overall: bool) -> pd.DataFrame:
    """Summary rows of whole-task curves (``overall``) or of the gap curves, with display keys added."""
    from mmfair.core.evaluation.robustness_summary import train_missing_labels

    # gaps are per label (a phenotype's gap is not the mean of its labels' gaps), overall rows the task summary
    scope = (missing["attribute"] == "all") & (missing["label"] == "all") if overall else missing["attribute"] != "all"
    rows = missing[missing["metric"].isin(list(_SUMMARIES)) & scope & (missing["group"] == "all")].copy()
    if len(rows) == 0:
        return rows.assign(of=[], modality=[], **{TRAIN_MISSING_HEADER: []})
    params = rows["scenario_params"].map(_params)
    rows["of"] = params.map(lambda p: p.get("of", ""))
    rows["modality"] = params.map(lambda p: p.get("modality", ""))
    rows["scenario"] = [s + (f" by {p['by']}" if p.get("by") else "") for s, p in zip(rows["scenario"], params)]
    rows[TRAIN_MISSING_HEADER] = train_missing_labels(rows)
    return rows


def _cell(rows: pd.DataFrame, name: str) -> str:
    return _r_star_cell(rows) if name == "r_star" else _value_cell(rows)


def _er_footnote(rows: pd.DataFrame) -> str:
    references = sorted({p.get("reference") for p in rows["scenario_params"].map(_params) if p.get("reference")})
    return FOOTNOTE_ER.format(ref=", ".join(references) or BASELINE_METHOD)


def robustness_table(missing: pd.DataFrame) -> pd.DataFrame:
    """method × train missing × mechanism: RR, ER and r* of AUROC and AUPRC (display strings; ``attrs`` for
    the renderers)."""
    rows = _summary_rows(missing, overall=True)
    notes = [FOOTNOTE_RR]
    if len(rows):
        notes += [_er_footnote(rows), FOOTNOTE_RSTAR]
    cols = [*_KEYS, "runs"] + [f"{label} {short}" for label in _METRICS.values() for short in _SUMMARIES.values()]
    out, any_na = [], False
    for key, block in rows.groupby(_KEYS, sort=True) if len(rows) else ():
        rec = dict(zip(_KEYS, key))
        rec["runs"] = str(block["run_id"].nunique())
        for metric, label in _METRICS.items():
            for name, short in _SUMMARIES.items():
                cell = _cell(block[(block["of"] == metric) & (block["metric"] == name)], name)
                any_na |= cell.startswith("n/a")
                rec[f"{label} {short}"] = cell
        out.append(rec)
    df = pd.DataFrame(out, columns=cols)
    keep = [c for c in cols if c in _KEYS or c == "runs" or (df[c] != "–").any()] if len(df) else cols
    df = df[keep].reset_index(drop=True)
    if any_na:
        notes.append(FOOTNOTE_NA)
    df.attrs.update({"name": "robustness", "title": TITLE, "description": DESCRIPTION, "footnotes": notes})
    return df


def robustness_gap_table(missing: pd.DataFrame) -> pd.DataFrame:
    """method × train missing × mechanism × label × attribute × gap: RR, ER and r* of each gap's curve."""
    rows = _summary_rows(missing, overall=False)
    rows = rows[rows["of"].isin(list(GAP_SUMMARIES))]
    keys = [*_KEYS, "label", "attribute"]
    cols = [*keys, "gap", "runs", *_SUMMARIES.values()]
    notes = [FOOTNOTE_GAP_DIRECTION, FOOTNOTE_RR]
    if len(rows):
        notes.append(_er_footnote(rows))
    out, any_na = [], False
    order = list(GAP_SUMMARIES)
    for key, block in rows.groupby(keys, sort=True) if len(rows) else ():
        for of in sorted(set(block["of"]), key=order.index):
            gap_rows = block[block["of"] == of]
            rec = {**dict(zip(keys, key)), "gap": f"{GAP_SUMMARIES[of]} (lower is better)",
                   "runs": str(gap_rows["run_id"].nunique())}  # fmt: skip
            for name, short in _SUMMARIES.items():
                rec[short] = cell = _cell(gap_rows[gap_rows["metric"] == name], name)
                any_na |= cell.startswith("n/a")
            out.append(rec)
    df = pd.DataFrame(out, columns=cols).reset_index(drop=True)
    if any_na:
        notes.append(FOOTNOTE_NA)
    df.attrs.update({"name": "robustness_gaps", "title": GAP_TITLE, "description": GAP_DESCRIPTION, "footnotes": notes})
    return df


# --------------------------------------------------------------------------------------------------
# modality Shapley values

SHAPLEY_TITLE = "Modality contributions (Shapley)"
SHAPLEY_DESCRIPTION = ("HAIM's modality Shapley values from the modality-subset runs (same task, fold and seed), "
                       "on the test stays that have every modality: what each modality adds to AUROC, overall "
                       "and per group.")  # fmt: skip
FOOTNOTE_SHAPLEY = ("φ values sum to v(all) − 0.5, where v(all) is the fusion run's AUROC on these stays and 0.5 "
                    "that of a model with no modality (v(∅)).")  # fmt: skip
_ORDER = ("ehr", "cxr", "static")
PLAYERS_HEADER = "players"
_TWO_PLAYERS = "ehr+cxr"


def _player_key(m: str) -> tuple:
    return (_ORDER.index(m) if m in _ORDER else 9, m)


def _players_of_runs(rows: pd.DataFrame) -> pd.Series:
    """Per row, its fusion run's players (``ehr+cxr``, ``ehr+cxr+static``, ``cxr+static``, …): the modalities
    of that run's Shapley rows."""
    sets = rows.groupby("run_id")["modalities"].agg(lambda m: "+".join(sorted(set(m), key=_player_key)))
    return rows["run_id"].map(sets)


def _suppressed(rows: pd.DataFrame, min_group_size: int) -> set[tuple]:
    """(method, players, task, train missing, attribute, group) cells hidden under the small-cell rule, with
    complementary cells."""
    from mmfair.core.reporting.suppression import suppress_block

    cell = ["method", PLAYERS_HEADER, "task", TRAIN_MISSING_HEADER]
    counts = rows[rows["attribute"] != "all"].drop_duplicates(["run_id", "attribute", "group"])
    hidden: set[tuple] = set()
    for _, block in counts.groupby(["run_id", "attribute"], sort=False):
        flags = suppress_block(block["group"].to_numpy(), block["n"], block["n_pos"], min_group_size)
        for (_, r), flag in zip(block.iterrows(), flags):
            if flag:
                hidden.add((*(r[c] for c in cell), r["attribute"], r["group"]))
    agg = counts.groupby([*cell, "attribute", "group"], sort=False)["n"].min().reset_index()
    for key, block in agg.groupby([*cell, "attribute"], sort=False):
        flags = np.array([(*key, g) in hidden for g in block["group"]])
        if flags.sum() == 1 and flags.size > 1:
            rest = block[~flags].sort_values(["n", "group"])
            hidden.add((*key, rest.iloc[0]["group"]))
    return hidden


def shapley_table(missing: pd.DataFrame, min_group_size: int = 10) -> pd.DataFrame:
    """method × players × task × train missing × attribute × group: φ per modality (label ``all``), with the
    small-cell rule. One game per row: a method's runs over different player sets (``ehr+cxr``,
    ``ehr+cxr+static``, ``cxr+static``, …) are separate rows, and a player outside the game shows ``–``. The
    ``players`` column is shown only when some game is not ``ehr+cxr`` (the static modality is in play)."""
    from mmfair.core.evaluation.robustness_summary import train_missing_labels
    from mmfair.core.reporting.suppression import marker

    rows = missing[(missing["metric"] == "shapley") & (missing["label"] == "all")].copy()
    rows[TRAIN_MISSING_HEADER] = train_missing_labels(rows)
    rows[PLAYERS_HEADER] = _players_of_runs(rows) if len(rows) else pd.Series(dtype=object)
    players = sorted(set(rows["modalities"]), key=_player_key)
    keys = ["method", PLAYERS_HEADER, "task", TRAIN_MISSING_HEADER, "attribute", "group"]
    cols = keys + ["runs", "n"] + [f"φ {p}" for p in players]
    notes = [FOOTNOTE_SHAPLEY]
    out = []
    hidden = _suppressed(rows, min_group_size) if len(rows) else set()
    mark = marker(min_group_size)
    for key, block in rows.groupby(keys, sort=True):
        rec = dict(zip(keys, key))
        rec["runs"] = str(block["run_id"].nunique())
        if key in hidden:
            rec["n"] = mark
            rec.update({f"φ {p}": mark for p in players})
            out.append(rec)
            continue
        ns = block.drop_duplicates("run_id")["n"].dropna().astype(int)
        rec["n"] = "" if ns.empty else (str(ns.iloc[0]) if ns.nunique() == 1 else f"{ns.min()}–{ns.max()}")
        for p in players:
            cell_rows = block[block["modalities"] == p]
            rec[f"φ {p}"] = _shapley_cell(cell_rows)
        out.append(rec)
    df = pd.DataFrame(out, columns=cols)
    if len(df):
        df["_all"] = df["attribute"] != "all"  # the overall row first
        df["_size"] = df[PLAYERS_HEADER].str.count(r"\+")  # within a method: the largest game last
        df = df.sort_values(["method", "_size", PLAYERS_HEADER, "task", TRAIN_MISSING_HEADER, "_all", "attribute",
                             "group"], kind="mergesort").drop(columns=["_all", "_size"])  # fmt: skip
    if not len(df) or set(df[PLAYERS_HEADER]) <= {_TWO_PLAYERS}:
        df = df.drop(columns=PLAYERS_HEADER)  # the EHR + CXR game only: the column would say nothing
    if hidden:
        notes.append(f"{mark}: suppressed under the small-cell rule (fewer than {min_group_size} stays, positives or "
                     "negatives in a group, plus a complementary group where only one would be hidden).")  # fmt: skip
    if len(df) and (df.drop(columns=[c for c in keys + ["runs", "n"] if c in df.columns]) == "n/a").any().any():
        notes.append("n/a: undefined (a subset's AUROC is undefined on these stays, e.g. a group with one class).")
    df = df.reset_index(drop=True)
    df.attrs.update({"name": "shapley", "title": SHAPLEY_TITLE, "description": SHAPLEY_DESCRIPTION, "footnotes": notes})
    return df


def _shapley_cell(rows: pd.DataFrame) -> str:
    if len(rows) == 0:
        return "–"
    if len(rows) == 1:
        r = rows.iloc[0]
        if not r["defined"] or not np.isfinite(r["value"]):
            return "n/a"
        text = f"{r['value']:+.3f}"
        if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
            text += f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        return text
    vals = rows.loc[rows["defined"], "value"].dropna().to_numpy()
    if vals.size == 0:
        return "n/a"
    mark = "‡" if vals.size < len(rows) else ""
    if vals.size == 1:
        return f"{vals[0]:+.3f}{mark}"
    return f"{vals.mean():+.3f} ± {vals.std(ddof=1):.3f} (k={vals.size}){mark}"


def robustness_tables(missing: pd.DataFrame, min_group_size: int = 10) -> dict[str, pd.DataFrame]:
    """The tables of this module, in report order: ``robustness``, ``robustness_gaps`` and ``shapley``."""
    return {"robustness": robustness_table(missing), "robustness_gaps": robustness_gap_table(missing),
            "shapley": shapley_table(missing, min_group_size)}  # fmt: skip
