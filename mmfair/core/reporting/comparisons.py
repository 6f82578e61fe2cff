"""Report tables of the statistics: paired comparisons against a reference, rank tests across methods,
and the checkpoint selection rules side by side. Pure functions of the tidy tables (DESIGN §3.4).

* ``comparisons``: each method − the reference (AUROC difference with its paired patient-level bootstrap
  interval, permutation p and p adjusted across a phenotype's labels), from the ``auroc_difference*`` rows
  that ``eval-fair`` writes;
* ``comparisons_no_cxr``: the same, restricted to the test stays without a CXR, with a one-line answer to
  "do the missing-aware methods beat late fusion there?" that says what the intervals say, either way;
* ``gap_comparisons``: the difference of the AUROC gap per attribute (negative: the method's gap is smaller);
* ``ranks_auroc`` / ``ranks_auroc_gap``: mean rank of each method over blocks (task × label, or task × label
  × attribute), Friedman's test, the Nemenyi critical difference and Wilcoxon–Holm against the reference —
  only with at least 3 methods and 2 complete blocks. They run **per condition** (test cohort, selection
  rule, threshold rule, evaluated stays; the method label carries the training conditions that differ
  from the defaults), the condition shown as columns: methods trained or scored differently are never
  pooled into one rank (issue 11);
* ``selection_rules``: for runs with several checkpoint selection rules, each rule's epoch, AUROC and
  fairness gaps, flagging where the rules pick different epochs or give different fairness.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mmfair.core.config import BASELINE_METHOD
from mmfair.core.evaluation import stats
from mmfair.core.evaluation.tidy import to_frame

NA = "n/a"

DESCRIPTIONS = {
    "comparisons": ("Paired comparisons with the reference method", "AUROC of each method minus that of the "
                    "reference run on the same task and test fold, on the same test stays: stays = all (both "
                    "score every test stay), with_cxr (one method needs a CXR: the stays with one) or common; n "
                    "counts them."),
    "comparisons_no_cxr": ("Stays without a CXR: each method vs the reference", "Does a method beat the reference "
                           "on the test stays whose CXR is missing? AUROC difference on those stays only."),
    "gap_comparisons": ("Paired comparisons of the AUROC gap", "AUROC gap (max − min group AUROC, over the groups "
                        "the small-cell rule shows) of each method minus the reference's, same stays; negative "
                        "means the method's gap is smaller."),
    "ranks_auroc": ("Ranks across methods: AUROC", "Mean rank of each method over task × label blocks (1 = best), "
                    "with Wilcoxon signed-rank tests against the reference, Holm-adjusted."),
    "ranks_auroc_gap": ("Ranks across methods: AUROC gap", "Mean rank of each method's AUROC gap over task × label "
                        "× attribute blocks (1 = smallest gap), with Wilcoxon–Holm against the reference."),
    "selection_rules": ("Checkpoint selection rules", "For runs trained with several selection rules: the epoch "
                        "each rule kept, the test AUROC and the fairness gaps of that checkpoint."),
}  # fmt: skip

FOOTNOTE_PAIRED = ("Interval: 95 % paired patient-level bootstrap (both methods on the same resamples). p: two-sided "
                   "paired permutation test (whole patients' predictions swapped between the two methods); p adj.: "
                   "{adjust} across the labels of one run (a binary task has one label, so p adj. = p).")  # fmt: skip
FOOTNOTE_BLOCKS = ("{condition}Blocks are not independent: the labels of one phenotype model (e.g. its 25 labels) and "
                   "the attributes of one run share a model and test stays, so the rank tests are descriptive "
                   "rather than exact. Friedman χ² = {chi:.2f}, p = {p}; Nemenyi critical difference of mean ranks "
                   "(α = 0.05) = {cd:.2f} over {n} complete blocks: two methods whose mean ranks differ by less are "
                   "not distinguished.")  # fmt: skip
#: The condition a rank test runs within (columns of the rank tables).
RANK_CONDITION = ("test_cohort", "selection", "threshold_rule", "evaluated_on")
FOOTNOTE_RANKS_MISSING = "Rank tests need at least 3 methods and 2 complete blocks; here: {k} methods, {n} blocks."
FOOTNOTE_RULES = ("Flags: 'epoch' when the rules kept different epochs; 'gap' when the AUROC-gap intervals of two "
                  "rules do not overlap (different fairness beyond the bootstrap uncertainty); 'gap Δ' gives the "
                  "largest difference between rules' AUROC gaps.")  # fmt: skip


def _p(x: float) -> str:
    if not np.isfinite(x):
        return NA
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _ci(value: float, low: float, high: float, signed: bool = True) -> str:
    if not np.isfinite(value):
        return NA
    f = "{:+.3f}" if signed else "{:.3f}"
    text = f.format(value)
    if np.isfinite(low) and np.isfinite(high):
        text += f" [{f.format(low)}, {f.format(high)}]"
    return text


def _finish(df: pd.DataFrame, name: str, footnotes: list[str]) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    title, description = DESCRIPTIONS[name]
    df.attrs.update({"name": name, "title": title, "description": description, "footnotes": list(dict.fromkeys(footnotes))})
    return df


def _reference_of(row: pd.Series) -> dict:
    try:
        return json.loads(row["scenario_params"] or "{}")
    except json.JSONDecodeError:
        return {}


def verdict(low: float, high: float, *, smaller_is_better: bool = False) -> str:
    """What the interval of a difference (method − reference) says, in words."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undefined"
    if low > 0:
        return "worse than reference" if smaller_is_better else "better than reference"
    if high < 0:
        return "better than reference" if smaller_is_better else "worse than reference"
    return "no difference shown"


_DIFF_COLUMNS = ["method", "modalities", "task", "fold", "seed", "test_cohort", "selection", "stays", "reference",
                 "label", "attribute", "group", "n", "difference [95% CI]", "p", "p adj.", "verdict"]  # fmt: skip


def _difference_table(rows: pd.DataFrame, metric: str, *, smaller_is_better: bool) -> tuple[pd.DataFrame, set[str]]:
    main = rows[rows["metric"] == metric]
    p_of = rows[rows["metric"] == f"{metric}_p"]
    padj_of = rows[rows["metric"] == f"{metric}_p_adjusted"]
    keys = ["run_id", "label", "attribute", "group", "scenario_params", "selection", "threshold_rule"]

    def lookup(frame: pd.DataFrame) -> dict:
        return {tuple(r[k] for k in keys): r["value"] for _, r in frame.iterrows()}

    p_map, padj_map = lookup(p_of), lookup(padj_of)
    out, adjust = [], set()
    for _, r in main.iterrows():
        key = tuple(r[k] for k in keys)
        params = _reference_of(r)
        adjust.add(str(params.get("adjust", "holm")))
        out.append({
            "method": r["method"], "modalities": r["modalities"], "task": r["task"], "fold": r["fold"],
            "seed": r["seed"], "test_cohort": r["test_cohort"], "selection": r["selection"],
            "stays": r["evaluated_on"], "reference": params.get("reference", ""),
            "label": r["label"], "attribute": r["attribute"], "group": r["group"],
            "n": "" if pd.isna(r["n"]) else str(int(r["n"])),
            "difference [95% CI]": _ci(r["value"], r["ci_low"], r["ci_high"]) if r["defined"] else NA,
            "p": _p(p_map.get(key, np.nan)), "p adj.": _p(padj_map.get(key, np.nan)),
            "verdict": verdict(r["ci_low"], r["ci_high"], smaller_is_better=smaller_is_better) if r["defined"]
            else "undefined",
        })  # fmt: skip
    df = pd.DataFrame(out, columns=_DIFF_COLUMNS)
    if len(df):
        df = df.sort_values(["task", "label", "attribute", "group", "method", "fold", "seed"], kind="mergesort")
    return df, adjust


def _adjust_note(adjust: set[str]) -> str:
    names = {"holm": "Holm", "bh": "Benjamini–Hochberg"}
    return FOOTNOTE_PAIRED.format(adjust=" / ".join(names.get(a, a) for a in sorted(adjust)) or "Holm")


def comparison_table(fairness: pd.DataFrame) -> pd.DataFrame:
    rows = fairness[fairness["metric"].str.startswith("auroc_difference") & (fairness["attribute"] == "all")]
    table, adjust = _difference_table(rows, "auroc_difference", smaller_is_better=False)
    table = table.drop(columns=["attribute", "group"])
    return _finish(table, "comparisons", [_adjust_note(adjust)] if len(table) else [])


def no_cxr_answer(table: pd.DataFrame) -> str:
    """One sentence saying what the no-CXR comparisons show, whichever way they go."""
    if len(table) == 0:
        return ""
    counts = table["verdict"].value_counts()
    better, worse = int(counts.get("better than reference", 0)), int(counts.get("worse than reference", 0))
    same, total = int(counts.get("no difference shown", 0)), len(table)
    reference = table["reference"].iloc[0] or "the reference"
    if better == 0:
        lead = f"No method beats {reference} on stays without a CXR"
    else:
        winners = sorted(set(table.loc[table["verdict"] == "better than reference", "method"]))
        lead = f"On stays without a CXR, {', '.join(winners)} beat{'s' if len(winners) == 1 else ''} {reference}"
    return (f"{lead}: of {total} comparisons, {better} show a higher AUROC than {reference} (interval above 0), "
            f"{worse} a lower one and {same} no difference the intervals can resolve.")  # fmt: skip


def no_cxr_table(fairness: pd.DataFrame) -> pd.DataFrame:
    rows = fairness[fairness["metric"].str.startswith("auroc_difference") & (fairness["attribute"] == "has_cxr")
                    & (fairness["group"] == "0")]  # fmt: skip
    table, adjust = _difference_table(rows, "auroc_difference", smaller_is_better=False)
    table = table.drop(columns=["attribute", "group"])
    notes = [no_cxr_answer(table), _adjust_note(adjust)] if len(table) else []
    return _finish(table, "comparisons_no_cxr", notes)


def gap_comparison_table(fairness: pd.DataFrame) -> pd.DataFrame:
    rows = fairness[fairness["metric"].str.startswith("auroc_gap_difference")]
    table, adjust = _difference_table(rows, "auroc_gap_difference", smaller_is_better=True)
    table = table.drop(columns=["group"])
    return _finish(table, "gap_comparisons", [_adjust_note(adjust)] if len(table) else [])


def _blocks(rows: pd.DataFrame, metric: str, block: list[str]) -> pd.DataFrame:
    sel = rows[(rows["metric"] == metric) & (rows["scenario"] == "none")]
    sel = sel[sel["group"] == "all"]
    # a phenotype's macro row (label all) repeats its labels: rank the labels, not their mean too
    multi = set(sel.loc[sel["label"] != "all", "task"])
    sel = sel[~((sel["label"] == "all") & sel["task"].isin(multi))]
    return stats.blocks_from_tidy(sel, metric, tuple(block))


def rank_table(rows: pd.DataFrame, metric: str, block: list[str], reference: str, name: str,
               higher_is_better: bool) -> pd.DataFrame:  # fmt: skip
    """The rank statistics of each condition (:data:`RANK_CONDITION`), one block of rows per condition."""
    rows = rows[rows["metric"] == metric] if len(rows) else rows
    parts, notes = [], []
    conditions = rows.groupby(list(RANK_CONDITION), sort=True) if len(rows) else [((), rows)]
    for key, part in conditions:
        condition = dict(zip(RANK_CONDITION, key))
        table = _rank_condition(part, metric, block, reference, name, higher_is_better, condition)
        notes += table.attrs.get("footnotes", [])
        parts.append(table.assign(**{c: condition.get(c, "") for c in RANK_CONDITION}) if len(table) else table)
    cols = [*RANK_CONDITION, *_RANK_COLUMNS]
    done = [p for p in parts if len(p)]
    out = pd.concat(done, ignore_index=True)[cols] if done else pd.DataFrame(columns=cols)
    return _finish(out, name, notes)


_RANK_COLUMNS = ["method", "mean rank", "median difference vs reference", "Wilcoxon p", "p Holm"]


def _condition_text(condition: dict) -> str:
    return ("" if not condition else
            "[" + ", ".join(f"{k} {v}" for k, v in condition.items() if v not in ("", None)) + "] ")  # fmt: skip


def _rank_condition(rows: pd.DataFrame, metric: str, block: list[str], reference: str, name: str,
                    higher_is_better: bool, condition: dict) -> pd.DataFrame:  # fmt: skip
    cols = _RANK_COLUMNS
    where = _condition_text(condition)
    table = _blocks(rows, metric, block) if len(rows) else pd.DataFrame()
    complete = table.dropna(axis=0, how="any") if len(table) else table
    k, n = (complete.shape[1], complete.shape[0]) if len(table) else (0, 0)
    if k < 3 or n < 2:
        return _finish(pd.DataFrame(columns=cols), name, [where + FOOTNOTE_RANKS_MISSING.format(k=k, n=n)])
    result = stats.compare_many(complete, higher_is_better=higher_is_better, reference=reference) \
        if reference in complete.columns else None
    ranks = stats.mean_ranks(complete, higher_is_better)
    versus = result.versus_reference.set_index("method") if result is not None else pd.DataFrame()
    out = []
    for method, rank in ranks.items():
        rec = {"method": method, "mean rank": f"{rank:.2f}"}
        if method == reference:
            rec.update({"median difference vs reference": "(reference)", "Wilcoxon p": "", "p Holm": ""})
        elif method in versus.index:
            v = versus.loc[method]
            rec.update({"median difference vs reference": f"{v['median_difference']:+.3f}",
                        "Wilcoxon p": _p(v["p_value"]), "p Holm": _p(v["p_holm"])})  # fmt: skip
        else:
            rec.update({"median difference vs reference": NA, "Wilcoxon p": NA, "p Holm": NA})
        out.append(rec)
    chi, p = stats.friedman(complete)
    cd = stats.nemenyi_cd(k, n)
    notes = [FOOTNOTE_BLOCKS.format(condition=where, chi=chi, p=_p(p), cd=cd, n=n)]
    if result is None:
        notes.append(f"{where}The reference method '{reference}' has no complete block: no Wilcoxon tests.")
    return _finish(pd.DataFrame(out, columns=cols), name, notes)


_RULE_GAPS = {"auroc_gap": "AUROC gap", "worst_group_auroc": "Worst-group AUROC", "equalized_odds_difference": "EO diff"}


def selection_rule_table(metrics: pd.DataFrame, fairness: pd.DataFrame) -> pd.DataFrame:
    """Each selection rule's epoch, test AUROC and gaps, per run × label × attribute (runs with ≥ 2 rules)."""
    cols = ["method", "task", "fold", "seed", "label", "attribute", "threshold_rule", "evaluated_on", "selection",
            "epoch", "AUROC", *_RULE_GAPS.values(), "rules disagree"]  # fmt: skip
    gaps = fairness[fairness["metric"].isin(list(_RULE_GAPS)) & (fairness["group"] == "all")]
    gaps = gaps[gaps["scenario"] == "none"]
    multi = gaps.groupby("run_id")["selection"].nunique()
    gaps = gaps[gaps["run_id"].isin(multi[multi > 1].index)]
    if len(gaps) == 0:
        return _finish(pd.DataFrame(columns=cols), "selection_rules", [])
    epochs = fairness[fairness["metric"] == "selected_epoch"]
    epoch_of = {(r.run_id, r.selection): int(r.value) for r in epochs.itertuples() if np.isfinite(r.value)}
    clean = metrics[(metrics["metric"] == "auroc") & (metrics["group"] == "all") & (metrics["scenario"] == "none")]
    auroc_of = {(r.run_id, r.selection, r.label, r.evaluated_on): (r.value, r.ci_low, r.ci_high)
                for r in clean.itertuples()}  # fmt: skip
    out = []
    keys = ["run_id", "method", "task", "fold", "seed", "label", "attribute", "threshold_rule", "evaluated_on"]
    for key, block in gaps.groupby(keys, sort=True):
        rec_key = dict(zip(keys, key))
        by_rule = {sel: part for sel, part in block.groupby("selection", sort=False)}
        order = sorted(by_rule, key=lambda s: (s != "overall", s))
        gap_ci = {}
        for sel in order:
            hit = by_rule[sel][by_rule[sel]["metric"] == "auroc_gap"]
            if len(hit) and bool(hit["defined"].iloc[0]):
                gap_ci[sel] = (hit["value"].iloc[0], hit["ci_low"].iloc[0], hit["ci_high"].iloc[0])
        flags = []
        rule_epochs = {epoch_of.get((rec_key["run_id"], s)) for s in order} - {None}
        if len(rule_epochs) > 1:
            flags.append("epoch")
        if len(gap_ci) > 1:
            values = [v[0] for v in gap_ci.values()]
            disjoint = any(a[2] < b[1] or b[2] < a[1] for a in gap_ci.values() for b in gap_ci.values())
            if disjoint:
                flags.append("gap")
            flags.append(f"gap Δ={max(values) - min(values):.3f}")
        for sel in order:
            part = by_rule[sel]
            rec = {k: rec_key[k] for k in cols if k in rec_key}
            rec["selection"] = sel
            epoch = epoch_of.get((rec_key["run_id"], sel))
            rec["epoch"] = "" if epoch is None else str(epoch)
            au = auroc_of.get((rec_key["run_id"], sel, rec_key["label"], rec_key["evaluated_on"]))
            rec["AUROC"] = _ci(*au, signed=False) if au else NA
            for m, header in _RULE_GAPS.items():
                hit = part[part["metric"] == m]
                ok = len(hit) and bool(hit["defined"].iloc[0])
                rec[header] = _ci(hit["value"].iloc[0], hit["ci_low"].iloc[0], hit["ci_high"].iloc[0], signed=False) \
                    if ok else NA
            rec["rules disagree"] = ", ".join(flags) if flags else "no"
            out.append(rec)
    return _finish(pd.DataFrame(out, columns=cols), "selection_rules", [FOOTNOTE_RULES])


def statistics_tables(metrics: pd.DataFrame | None, fairness: pd.DataFrame | None, *,
                      reference: str = BASELINE_METHOD) -> dict[str, pd.DataFrame]:  # fmt: skip
    """The tables of this module, in report order (any input may be ``None`` or empty)."""
    metrics = to_frame([]) if metrics is None or len(metrics) == 0 else metrics
    fairness = to_frame([]) if fairness is None or len(fairness) == 0 else fairness
    from mmfair.core.evaluation.tidy import normalise

    from mmfair.core.reporting.tables import label_conditions

    # the training conditions that differ from the defaults become part of the method label: never pooled
    metrics, fairness = label_conditions(normalise(metrics)), label_conditions(normalise(fairness))
    return {
        "comparisons": comparison_table(fairness),
        "comparisons_no_cxr": no_cxr_table(fairness),
        "gap_comparisons": gap_comparison_table(fairness),
        "ranks_auroc": rank_table(metrics, "auroc", ["task", "label"], reference, "ranks_auroc", True),
        "ranks_auroc_gap": rank_table(fairness, "auroc_gap", ["task", "label", "attribute"], reference,
                                      "ranks_auroc_gap", False),
        "selection_rules": selection_rule_table(metrics, fairness),
    }
