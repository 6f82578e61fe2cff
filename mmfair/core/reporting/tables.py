"""Tidy results → display tables. Pure functions of the tidy tables (DESIGN §3.4); no metric is recomputed.

Every table is a DataFrame of display strings; ``df.attrs`` holds ``title``, ``description`` and
``footnotes`` for the renderers. Conventions:

* a value is ``0.812 [0.781, 0.840]`` with its 95 % patient-level bootstrap interval when it comes from
  one run; with several runs (seeds/folds) it is ``mean ± sd (k=…)`` over runs;
* draws of a missing-modality scenario are averaged within a run first (value and interval bounds);
* an undefined value is ``n/a`` (never 0); a cell mixing defined and undefined runs averages the
  defined ones and is marked ``‡``; ``–`` means "not applicable to this task";
* the small-cell rule (:mod:`.suppression`) replaces suppressed subgroup cells by ``<k``;
* rows are aggregated only within one *condition* (issue 11): the method label (which carries its
  modulator, non-default parameters and ``fair_attr``, plus the training conditions that differ from the
  defaults, :func:`label_conditions`), modalities, task, test cohort, checkpoint selection rule, threshold
  rule and the evaluated stays; each is a column (or fixed in the title), never averaged over;
* every table says which stays its numbers scored: a ``stays`` column (``evaluated_on``) with ``n`` their
  number, and the caption says it in words.
"""

from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import pandas as pd

from mmfair.core.evaluation.robustness_summary import train_missing_labels
from mmfair.core.evaluation.tidy import normalise, to_frame
from mmfair.core.reporting.fairness import FOOTNOTE_INTERSECTION, GAP_COLUMNS, GROUP_COLUMNS
from mmfair.core.reporting.fairness import complement, gap_footnotes, is_intersection
from mmfair.core.reporting.suppression import is_small, marker
from mmfair.core.reporting.robustness import TRAIN_MISSING_HEADER, robustness_tables

NA = "n/a"
NOT_APPLICABLE = "–"
MIXED = "‡"

_RUN_KEYS = ("method", "modalities", "task")
#: The clean leaderboards' condition beyond the run keys: never averaged over (issue 11: the clean table
#: used to average the selection rules of one run).
_CLEAN_KEYS = (*_RUN_KEYS, "test_cohort", "selection")
#: ``evaluated_on`` in words, for captions.
STAYS_IN_WORDS = {"all": "every test stay", "with_cxr": "the test stays that have a CXR",
                  "common": "the test stays both compared methods scored",
                  "unrecorded": "stays not recorded (results written before protocol 2)"}  # fmt: skip
#: Missing-modality tables also keep runs trained with missingness (CXR dropout, a share of training stays
#: without it) apart from those trained without: never pooled as if they were seeds.
_MISSING_KEYS = (*_RUN_KEYS, TRAIN_MISSING_HEADER, "test_cohort")
_CLEAN_METRICS = {"auroc": "AUROC", "auprc": "AUPRC", "brier": "Brier", "accuracy": "Accuracy",
                  "kappa": "Kappa (unweighted)", "kappa_linear": "Kappa (linear)", "macro_f1": "Macro F1"}  # fmt: skip
_COST_METRICS = {"n_params": "Parameters", "train_seconds": "Train s", "peak_memory_mb": "Peak MB",
                 "infer_stays_per_s": "Inference stays/s"}
_GROUP_METRICS = GROUP_COLUMNS
#: Fairness rows of one run differ by checkpoint selection rule, operating point and test cohort: never
#: averaged together.
_FAIR_KEYS = ("selection", "threshold_rule", "test_cohort", "evaluated_on")
_GAP_METRICS = GAP_COLUMNS

FOOTNOTE_CI = ("Values from one run show the 95 % patient-level bootstrap interval [2.5th, 97.5th "
               "percentile]; values over several runs show mean ± sd across runs (k runs).")  # fmt: skip
FOOTNOTE_NA = ("n/a: undefined (e.g. AUROC of a group with one class, or a method that cannot score every "
               "evaluated stay, such as a CXR-only model on stays without a CXR); never read it as 0 or as fair.")  # fmt: skip
FOOTNOTE_MIXED = "‡ undefined in some runs; the value averages the runs where it is defined."
FOOTNOTE_SUPPRESSED = ("{m}: suppressed under the small-cell rule (a group with fewer than {k} stays, "
                       "positives or negatives), plus the next-smallest group of the attribute where only one "
                       "would be suppressed, so no small count can be recovered from the totals.")  # fmt: skip
FOOTNOTE_DRAWS = ("Missing rates are the requested shares of test stays with a CXR whose CXR was removed "
                  "(exact counts, label-stratified); every rate is scored on the same stays, those that had a CXR "
                  "(n), so a method that cannot score a stay whose CXR was removed is n/a. Draws are averaged "
                  "within a run; the interval pools the bootstrap replicates of every draw, so it includes the "
                  "randomness of the removal.")  # fmt: skip
FOOTNOTE_REALISED = ("A rate column marked 'realised …' removed a share other than the one requested (exact counts "
                     "round: {items}); its numbers are about the realised share.")  # fmt: skip
FOOTNOTE_LEGACY = ("Rows whose stays are 'unrecorded' were written before protocol 2 and may have scored a subset "
                   "of the stays; re-run the evaluation to replace them.")  # fmt: skip
FOOTNOTE_GAPS = ("Gaps are computed on hard predictions at the validation-chosen threshold, over the groups "
                 "where the underlying rates are defined; lower is better, except worst-group AUROC.")  # fmt: skip

DESCRIPTIONS = {
    "clean": ("Clean test performance: all test stays", "Test metrics with every modality as recorded (label = "
              "all: the task summary, macro over phenotypes), scored on every test stay (n): the methods that "
              "can score them all. A method that needs a CXR is n/a here and ranked in the next table."),
    "clean_with_cxr": ("Clean test performance: test stays with a CXR", "The same metrics for every method, scored "
                       "on the test stays that have a CXR (n) — the one population every method can score."),
    "clean_patient": ("Clean test performance: every patient counting once", "AUROC, AUPRC and Brier with each "
                      "stay weighted 1/k, k its patient's stays (eval-fair --patient-weighting), on every test "
                      "stay (all) and on the stays with a CXR (with_cxr); compare with the stay-weighted tables "
                      "above: the same resamples."),
    "probe": ("Demographic encoding (probe AUROC)", "How well each sensitive attribute can be predicted from a "
              "run's representations by a logistic probe fitted on its training stays (macro one-vs-rest AUROC on "
              "test; 0.5 = not encoded). Encoding is not unfairness by itself; read it beside the gaps above."),
    "costs": ("Cost", "Parameters, total training seconds, peak memory and inference speed (test stays per second) "
              "per method."),
    "missing": ("Robustness to a missing modality (MCAR)", "Test AUROC on the stays that have the removed "
                "modality, after removing it from the given share of them at random at test time (0 % is the "
                "clean reference)."),
    "missing_profiles": ("Structured and natural missingness", "Test AUROC when the removal share depends on a "
                         "group or on the outcome (profile: share per level), or on the full test fold as "
                         "recorded (natural); missing rate: the final share of evaluated stays without it."),
    "fairness_groups": ("Per-group performance", "Test prevalence, AUROC, TPR, FPR, PPV, selection rate, ECE and "
                        "Brier score per group of each sensitive attribute (or intersection of two); rates at the "
                        "threshold of the listed rule, chosen on validation; evaluated_on: all test stays, or "
                        "(with_cxr) the stays with a CXR for a method that needs one."),
    "fairness_gaps": ("Fairness gaps", "Between-group differences per attribute (fairlearn definitions) and "
                      "the worst group's AUROC, over the groups the small-cell rule shows; evaluated_on says "
                      "which stays: all (every test stay) or with_cxr (a method that needs a CXR, on the stays "
                      "with one)."),
}  # fmt: skip


def _empty() -> pd.DataFrame:
    return to_frame([])


def _prepare(df: pd.DataFrame | None) -> pd.DataFrame:
    return _empty() if df is None or len(df) == 0 else normalise(df)


def _num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _cost(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def format_cell(rows: pd.DataFrame, *, digits: int = 3, by: Iterable[str] = ("run_id",), cost: bool = False) -> str:
    """One display cell from the tidy rows of one (method, …, metric) combination.

    Rows are averaged within ``by`` (the run) first — draws of a scenario — then summarised across runs.
    """
    if len(rows) == 0:
        return NOT_APPLICABLE
    fmt = _cost if cost else (lambda v: _num(v, digits))
    per_run = rows.groupby(list(by), sort=False).agg(
        value=("value", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean"), defined=("defined", "all")
    )
    defined = per_run[per_run["defined"] & per_run["value"].notna()]
    if len(defined) == 0:
        return NA
    mark = MIXED if len(defined) < len(per_run) else ""
    if len(defined) == 1:
        r = defined.iloc[0]
        text = fmt(r.value)
        if np.isfinite(r.lo) and np.isfinite(r.hi) and not cost:
            text += f" [{fmt(r.lo)}, {fmt(r.hi)}]"
        return text + mark
    vals = defined["value"].to_numpy()
    return f"{fmt(vals.mean())} ± {fmt(vals.std(ddof=1))} (k={vals.size}){mark}"


def _select(df: pd.DataFrame, **eq) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k, v in eq.items():
        mask &= (df[k].isin(v) if isinstance(v, (list, tuple, set)) else df[k] == v).to_numpy()
    return df[mask]


def _finish(df: pd.DataFrame, name: str, footnotes: list[str]) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    title, description = DESCRIPTIONS[name]
    df.attrs.update({"name": name, "title": title, "description": description, "footnotes": list(dict.fromkeys(footnotes))})
    return df


def _wide(
    rows: pd.DataFrame, keys: list[str], metric_names: dict[str, str], *, cost: bool = False
) -> tuple[pd.DataFrame, bool, bool]:
    out, any_na, any_mixed = [], False, False
    present = [m for m in metric_names if m in set(rows["metric"])]
    for key, block in rows.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rec = dict(zip(keys, key))
        rec["runs"] = str(block["run_id"].nunique())
        for m in present:
            cell = format_cell(block[block["metric"] == m], cost=cost)
            any_na |= cell == NA
            any_mixed |= cell.endswith(MIXED)
            rec[metric_names[m]] = cell
        out.append(rec)
    cols = keys + ["runs"] + [metric_names[m] for m in present]
    return pd.DataFrame(out, columns=cols), any_na, any_mixed


def _n_cell(rows: pd.DataFrame) -> str:
    """The evaluated stays of a block: one number, or the range over its runs (folds differ)."""
    ns = pd.to_numeric(rows.drop_duplicates("run_id")["n"], errors="coerce").dropna().astype(int)
    if ns.empty:
        return ""
    return str(ns.iloc[0]) if ns.nunique() == 1 else f"{ns.min()}–{ns.max()}"


def clean_table(metrics: pd.DataFrame, evaluated_on: str = "all") -> pd.DataFrame:
    """A clean leaderboard on one fixed set of evaluated stays (``all`` or ``with_cxr``), one row per condition
    (method, modalities, task, test cohort, selection rule) with ``n`` the stays scored; stay-weighted rows only
    (patient-weighted ones are :func:`clean_patient_table`)."""
    wanted = [evaluated_on, "unrecorded"] if evaluated_on == "all" else [evaluated_on]
    rows = _select(metrics, scenario="none", label="all", group="all", metric=list(_CLEAN_METRICS),
                   evaluated_on=wanted, weighting="stay")  # fmt: skip
    table, any_na, any_mixed = _wide(rows, list(_CLEAN_KEYS), _CLEAN_METRICS)
    if len(table):
        n_of = {k: _n_cell(b[b["metric"].isin(["auroc", "accuracy"])]) for k, b in rows.groupby(list(_CLEAN_KEYS))}
        table.insert(len(_CLEAN_KEYS), "n", [n_of.get(tuple(r[k] for k in _CLEAN_KEYS), "") for _, r in table.iterrows()])
    notes = [FOOTNOTE_CI] + ([FOOTNOTE_NA] if any_na else []) + ([FOOTNOTE_MIXED] if any_mixed else [])
    notes += [FOOTNOTE_LEGACY] if (rows["evaluated_on"] == "unrecorded").any() else []
    return _finish(table, "clean" if evaluated_on == "all" else f"clean_{evaluated_on}", notes)


def clean_patient_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The patient-weighted clean rows, with the evaluated stays as a column (never pooled with stay rows)."""
    rows = _select(metrics, scenario="none", label="all", group="all", metric=list(_CLEAN_METRICS),
                   weighting="patient")  # fmt: skip
    table, _, _ = _wide(rows, [*_CLEAN_KEYS, "evaluated_on"], _CLEAN_METRICS)
    return _finish(table, "clean_patient", [FOOTNOTE_CI])


def cost_table(metrics: pd.DataFrame) -> pd.DataFrame:
    rows = _select(metrics, metric=list(_COST_METRICS))
    table, _, _ = _wide(rows, list(_RUN_KEYS), _COST_METRICS, cost=True)
    return _finish(table, "costs", ["Several runs: mean ± sd across runs."] if (table["runs"] != "1").any() else [])


def _requested_rate(row: pd.Series) -> float:
    try:
        params = json.loads(row["scenario_params"] or "{}")
    except json.JSONDecodeError:
        params = {}
    rate = params.get("requested_rate", row["missing_rate"])
    return round(float(rate), 4)


def _scenario_param(row: pd.Series, name: str, default: str = "") -> str:
    try:
        params = json.loads(row["scenario_params"] or "{}")
    except json.JSONDecodeError:
        params = {}
    value = params.get(name, default)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _realised_labels(rows: pd.DataFrame, rates: list[float]) -> tuple[dict[float, str], list[str]]:
    """Column labels of the requested rates, ``0.2% (realised 0%)`` where exact counts removed another share
    (``scenario_params`` ``removed_share``, mean over the rows), and the footnote items."""
    from mmfair.core.evaluation.missing import REALISED_TOLERANCE as _REALISED_TOLERANCE

    realised = rows.apply(lambda r: _scenario_param(r, "removed_share", ""), axis=1)
    rows = rows.assign(realised=pd.to_numeric(realised, errors="coerce"))
    labels, items = {}, []
    for r in rates:
        label = f"{r * 100:g}%"
        share = rows.loc[rows["rate"] == r, "realised"].dropna()
        far = abs(share.mean() - r) > max(_REALISED_TOLERANCE[0], _REALISED_TOLERANCE[1] * r) if len(share) else False
        if r > 0 and len(share) and (far or share.mean() == 0):  # far from the request, or nothing removed
            label += f" (realised {share.mean() * 100:.3g}%)"
            items.append(f"{r * 100:g}% → {share.mean() * 100:.3g}%")
        labels[r] = label
    return labels, items


def missing_table(missing: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """MCAR curves: one column per requested rate, one row per run group, removed modality and set of
    evaluated stays (``stays``, with ``n``: every rate of a row is scored on the same stays)."""
    rows = _select(missing, metric=metric, label="all", group="all")
    rows = rows[rows["scenario"] == "mcar"].copy()
    notes = [FOOTNOTE_DRAWS, FOOTNOTE_CI]
    if len(rows) == 0:
        return _finish(pd.DataFrame(columns=[*_MISSING_KEYS, "removed", "stays", "n", "runs"]), "missing", notes)
    rows["rate"] = rows.apply(_requested_rate, axis=1)
    rows["removed"] = rows.apply(_scenario_param, axis=1, args=("modality", "cxr"))
    rows["stays"] = rows["evaluated_on"]
    rows[TRAIN_MISSING_HEADER] = train_missing_labels(rows)
    rates = sorted(rows["rate"].unique())
    labels, realised = _realised_labels(rows, rates)
    if realised:
        notes.append(FOOTNOTE_REALISED.format(items="; ".join(realised)))
    out, any_na, any_mixed = [], False, False
    keys = [*_MISSING_KEYS, "removed", "stays"]
    for key, block in rows.groupby(keys, sort=True):
        rec = dict(zip(keys, key))
        rec["n"] = _n_cell(block[block["rate"] == 0.0]) or _n_cell(block)
        rec["runs"] = str(block["run_id"].nunique())
        for r in rates:
            cell = format_cell(block[block["rate"] == r])
            any_na |= cell == NA
            any_mixed |= cell.endswith(MIXED)
            rec[labels[r]] = cell
        out.append(rec)
    notes += ([FOOTNOTE_NA] if any_na else []) + ([FOOTNOTE_MIXED] if any_mixed else [])
    notes += [FOOTNOTE_LEGACY] if (rows["stays"] == "unrecorded").any() else []
    return _finish(pd.DataFrame(out, columns=keys + ["n", "runs"] + list(labels.values())), "missing", notes)


def missing_profile_table(missing: pd.DataFrame, metric: str = "auroc") -> pd.DataFrame:
    """The other mechanisms (group, label, natural): one row per run group, mechanism and removal profile."""
    rows = _select(missing, metric=metric, label="all", group="all")
    rows = rows[~rows["scenario"].isin(["none", "mcar"])].copy()
    keys = [*_MISSING_KEYS, "scenario", "removed", "by", "profile"]
    notes = [FOOTNOTE_DRAWS, FOOTNOTE_CI]
    if len(rows) == 0:
        return _finish(pd.DataFrame(columns=keys + ["runs", "missing rate", metric.upper()]), "missing_profiles", notes)
    rows["removed"] = rows.apply(_scenario_param, axis=1, args=("modality", "cxr"))
    rows["by"] = rows.apply(_scenario_param, axis=1, args=("by", ""))
    rows["profile"] = rows.apply(_scenario_param, axis=1, args=("rates", "observed"))
    rows[TRAIN_MISSING_HEADER] = train_missing_labels(rows)
    out, any_na = [], False
    for key, block in rows.groupby(keys, sort=True):
        rec = dict(zip(keys, key))
        rec["runs"] = str(block["run_id"].nunique())
        rec["missing rate"] = f"{pd.to_numeric(block['missing_rate'], errors='coerce').mean():.2f}"
        rec[metric.upper()] = cell = format_cell(block)
        any_na |= cell == NA
        out.append(rec)
    notes += [FOOTNOTE_NA] if any_na else []
    return _finish(pd.DataFrame(out, columns=keys + ["runs", "missing rate", metric.upper()]), "missing_profiles", notes)


def _suppressed_cells(groups: pd.DataFrame, min_group_size: int) -> set[tuple]:
    """(method, modalities, task, label, attribute, group) cells suppressed in any run's block.

    Two stages per run and attribute, so that no label's block reveals what another label's hides:
    first the groups with too few *stays* (label-independent) and their complement, applied to every
    label; then, per label, the groups with too few positives or negatives, and their complement.
    """
    counts = groups.drop_duplicates(["run_id", "label", "attribute", "group"])
    out: set[tuple] = set()
    for (_, attribute), block in counts.groupby(["run_id", "attribute"], sort=False):
        n_by_group = block.groupby("group")["n"].min()
        n_values = pd.to_numeric(n_by_group, errors="coerce").to_numpy(dtype=float)
        by_size = complement(attribute, n_by_group.index.to_numpy(), n_values,
                             np.nan_to_num(n_values, nan=-1) < min_group_size)  # fmt: skip
        too_few_stays = set(n_by_group.index[by_size])
        for _, lb in block.groupby("label", sort=False):
            small = is_small(lb["n"], lb["n_pos"], min_group_size) | lb["group"].isin(too_few_stays).to_numpy()
            flags = complement(attribute, lb["group"].to_numpy(), lb["n"], small)
            for (_, r), flag in zip(lb.iterrows(), flags):
                if flag:
                    out.add((r.method, r.modalities, r.task, r.label, r.attribute, r.group))
    # complementary rule again at the level of the displayed (aggregated over runs) block
    agg = counts.groupby([*_RUN_KEYS, "label", "attribute", "group"], sort=False)["n"].min().reset_index()
    for key, block in agg.groupby([*_RUN_KEYS, "label", "attribute"], sort=False):
        flags = np.array([(*key, g) in out for g in block["group"]])
        flags = complement(key[-1], block["group"].to_numpy(), block["n"].to_numpy(), flags)
        for g, flag in zip(block["group"], flags):
            if flag:
                out.add((*key, g))
    return out


def fairness_group_table(fairness: pd.DataFrame, min_group_size: int) -> pd.DataFrame:
    groups = _select(fairness, metric=list(_GROUP_METRICS))
    groups = groups[groups["group"] != "all"]
    keys = [*_RUN_KEYS, *_FAIR_KEYS, "label", "attribute", "group"]
    cols = keys + ["runs", "n"] + list(_GROUP_METRICS.values())
    notes = [FOOTNOTE_CI]
    if len(groups) == 0:
        return _finish(pd.DataFrame(columns=cols), "fairness_groups", notes)
    hidden: set[tuple] = set()
    for fair_key, part in groups.groupby(list(_FAIR_KEYS), sort=False):  # counts do not depend on these
        for k in _suppressed_cells(part, min_group_size):
            hidden.add((*k[: len(_RUN_KEYS)], *fair_key, *k[len(_RUN_KEYS) :]))
    mark = marker(min_group_size)
    out, any_na, any_mixed = [], False, False
    for key, block in groups.groupby(keys, sort=True):
        rec = dict(zip(keys, key))
        rec["runs"] = str(block["run_id"].nunique())
        if key in hidden:
            rec["n"] = mark
            rec.update({name: mark for name in _GROUP_METRICS.values()})
            out.append(rec)
            continue
        ns = block.drop_duplicates("run_id")["n"].dropna().astype(int)
        rec["n"] = str(ns.iloc[0]) if ns.nunique() == 1 else f"{ns.min()}–{ns.max()}"
        for m, name in _GROUP_METRICS.items():
            cell = format_cell(block[block["metric"] == m])
            any_na |= cell == NA
            any_mixed |= cell.endswith(MIXED)
            rec[name] = cell
        out.append(rec)
    if hidden:
        notes.append(FOOTNOTE_SUPPRESSED.format(m=mark, k=min_group_size))
        if any(is_intersection(a) for a in groups["attribute"].unique()):
            notes.append(FOOTNOTE_INTERSECTION)
    notes += ([FOOTNOTE_NA] if any_na else []) + ([FOOTNOTE_MIXED] if any_mixed else [])
    return _finish(pd.DataFrame(out, columns=cols), "fairness_groups", notes)


def fairness_gap_table(fairness: pd.DataFrame) -> pd.DataFrame:
    rows = _select(fairness, metric=list(_GAP_METRICS), group="all")
    table, any_na, any_mixed = _wide(rows, [*_RUN_KEYS, *_FAIR_KEYS, "label", "attribute"], _GAP_METRICS)
    notes = [FOOTNOTE_GAPS, FOOTNOTE_CI] + ([FOOTNOTE_NA] if any_na else []) + ([FOOTNOTE_MIXED] if any_mixed else [])
    notes += gap_footnotes(set(rows["metric"]))
    return _finish(table, "fairness_gaps", notes)


_PROBE_COLUMNS = {"probe_cxr": "CXR embedding", "probe_ehr": "EHR", "probe_fused": "fused"}


def probe_table(fairness: pd.DataFrame) -> pd.DataFrame:
    """``eval-fair --probe``: how well each attribute is predicted from each representation, beside the gaps."""
    rows = _select(fairness, metric="probe_auroc").copy()
    if len(rows):
        which = rows["scenario_params"].map(lambda t: json.loads(t or "{}").get("representation", ""))
        rows["metric"] = "probe_" + which
    table, any_na, _ = _wide(rows, [*_RUN_KEYS, "attribute"], _PROBE_COLUMNS)
    return _finish(table, "probe", [FOOTNOTE_CI] + ([FOOTNOTE_NA] if any_na else []))


def build_tables(metrics: pd.DataFrame | None, missing: pd.DataFrame | None, fairness: pd.DataFrame | None,
                 min_group_size: int = 10) -> dict[str, pd.DataFrame]:
    """Display tables from the three tidy results tables (any may be ``None`` or empty).

    Returns
    -------
    dict name → DataFrame of display strings, in report order:

    * ``clean``: method × task × test cohort × selection rule, AUROC/AUPRC/Brier (or LOS accuracy, kappa
      unweighted and linear, macro F1) with intervals, on every test stay (``n``);
    * ``clean_with_cxr``: the same for every method on the test stays with a CXR;
    * ``costs``: method × task, parameters, training seconds, peak memory;
    * ``missing``: method × requested missing rate, AUROC averaged over draws;
    * ``fairness_groups``: method × attribute × group, n, AUROC, TPR, FPR, with the small-cell rule;
    * ``fairness_gaps``: method × attribute, the gap metrics.

    The small-cell rule is applied here so that every renderer obeys it.
    """  # fmt: skip
    if min_group_size < 1:
        raise ValueError(f"min_group_size must be >= 1, got {min_group_size}")
    metrics, missing, fairness = _prepare(metrics), _prepare(missing), _prepare(fairness)
    labelled_missing = label_conditions(missing, ("train_cohort", "split"))  # train missing has its own column
    metrics, fairness = label_conditions(metrics), label_conditions(fairness)
    return {
        "clean": clean_table(metrics),
        "clean_with_cxr": clean_table(metrics, "with_cxr"),
        "clean_patient": clean_patient_table(metrics),
        "costs": cost_table(metrics),
        "missing": missing_table(labelled_missing),
        "missing_profiles": missing_profile_table(labelled_missing),
        **robustness_tables(missing, min_group_size),
        "fairness_groups": fairness_group_table(fairness, min_group_size),
        "fairness_gaps": fairness_gap_table(fairness),
        "probe": probe_table(fairness),
    }


#: Training conditions (tidy columns) and their defaults.
CONDITIONS = {"train_cohort": "full", "split": "random", "train_missing": "none"}


def label_conditions(df: pd.DataFrame, columns: Iterable[str] = tuple(CONDITIONS)) -> pd.DataFrame:
    """``method`` extended by the training conditions that differ from their defaults, e.g. ``late (matched,
    temporal)``, so runs trained under different conditions are never pooled in a table as if they were
    seeds of one method; rows at the defaults keep the plain name."""
    present = [c for c in columns if c in df.columns]
    if len(df) == 0 or not present:
        return df
    parts = []
    for column in present:
        default = CONDITIONS[column]
        values = df[column].astype(object).where(df[column].notna(), default).astype(str).replace("", default)
        parts.append(values.where(values != default, ""))
    tags = pd.concat(parts, axis=1).apply(lambda r: ", ".join(v for v in r if v), axis=1)
    if not tags.astype(bool).any():
        return df
    df = df.copy()
    df["method"] = df["method"].astype(str) + tags.map(lambda t: f" ({t})" if t else "")
    return df
