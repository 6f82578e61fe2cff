"""The report as sections (reading + figures + tables) and as one self-contained HTML file.

:func:`build_sections` turns the report inputs and display tables into :class:`Section` objects, each with a
one-paragraph plain-language reading generated from the same numbers its figures draw (:mod:`.views`), the
test behind each claim named in the sentence. :func:`render_html` lays them out with inline styles and
figures as inline SVG: no script, no network, no file beside it — it opens from a USB stick.
"""

from __future__ import annotations

import html
import importlib.metadata
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import mmfair
from mmfair.core.reporting import figures as F
from mmfair.core.reporting import predictions as P
from mmfair.core.reporting import views as V
from mmfair.core.reporting.inputs import ReportInputs, suppress_attrition
from mmfair.core.reporting.suppression import marker

#: Section ids and headings, in report order (the browser test checks each heading).
SECTIONS = {
    "fusion": "When does fusion help?",
    "leaderboard": "Leaderboard",
    "missing": "Missing modality",
    "fairness": "Fairness",
    "addition": "Modality addition",
    "contributions": "Modality contributions",
    "cohort": "Cohort",
    "provenance": "Provenance",
}
PACKAGES = ("torch", "numpy", "pandas", "scikit-learn", "scipy", "fairlearn", "timm", "matplotlib")
NOTHING = "No results for this section yet."


@dataclass
class Section:
    key: str
    reading: str = NOTHING
    figures: list[tuple[str, str, object]] = field(default_factory=list)  # (name, caption, Figure)
    tables: list[pd.DataFrame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return SECTIONS[self.key]


def _f(x: float, signed: bool = False) -> str:
    return "n/a" if not np.isfinite(x) else (f"{x:+.3f}" if signed else f"{x:.3f}")


def _ci(v: float, lo: float, hi: float, signed: bool = False) -> str:
    text = _f(v, signed)
    return text + (f" [{_f(lo, signed)}, {_f(hi, signed)}]" if np.isfinite(lo) and np.isfinite(hi) else "")


def _add(section: Section, name: str, caption: str, fig) -> None:
    if fig is not None:
        section.figures.append((name, caption, fig))


def _others_note(others: list[str]) -> list[str]:
    return [f"Shown: the default evaluation condition; also in the results: {', '.join(others)} (see the tables)."] \
        if others else []  # fmt: skip


# ------------------------------------------------------------------------------------------- sections


def fusion_section(inputs: ReportInputs, tables: dict) -> Section:
    s = Section("fusion")
    comp = V.paired_comparisons(inputs.fairness)
    best_text, best_table = best_single_part(inputs.best_single)
    if best_table is not None:
        s.tables.append(best_table)
    if len(comp) == 0:
        s.reading = " ".join([*best_text, "No paired comparisons with a reference yet: run `mmfair eval-fair "
                              "--reference late` (or another fusion method) to compare every model with it on the "
                              "same test stays."])  # fmt: skip
        return s
    single = comp[comp["kind"] == "vs single"]
    verdicts = comp["verdict"]
    parts = []
    if len(single):
        v = verdicts[single.index]
        parts.append(f"Of {len(single)} comparisons of a fusion model with a single-modality model, "
                     f"{(v == 'fusion better').sum()} show fusion better (95 % paired bootstrap interval of the AUROC "
                     f"difference above 0), {(v == 'fusion worse').sum()} worse and "
                     f"{(v == 'no difference shown').sum()} no difference the intervals can resolve.")  # fmt: skip
        for (task, label, fusion), b in single.groupby(["task", "label", "fusion"], sort=True):
            worst = b.loc[b["diff"].idxmin()]
            helps = (b["verdict"] == "fusion better").all()
            parts.append(f"On {task}{'' if label == 'all' else ' / ' + label}, {fusion} "
                         f"{'beats every' if helps else 'does not beat every'} single modality shown; its smallest "
                         f"gain is over {worst['other']}: {_ci(worst['diff'], worst['lo'], worst['hi'], True)}.")
    n_p = int(np.isfinite(comp["p"].to_numpy(dtype=float)).sum())
    if n_p:
        parts.append(f"p-values (paired permutation test) are Holm-adjusted across the {n_p} comparisons shown.")
    if (comp["runs"] > 1).any():
        parts.append("Where a comparison spans several runs (seeds or folds), the interval over runs is the corrected "
                     "resampled t-test (Nadeau & Bengio) beside the mean bootstrap interval.")  # fmt: skip
    if not best_text:
        parts.append("No single modality was picked as the best one (that needs the runs' validation predictions): "
                     "fusion is said to help only where it beats each of them.")  # fmt: skip
    s.reading = " ".join(best_text + parts)
    _add(s, "fusion_forest", "Paired AUROC differences, same test stays (fusion − single modality in blue; "
         "method − reference in orange), 95 % paired bootstrap intervals.", F.fusion_forest(comp))  # fmt: skip
    shown = comp
    table = pd.DataFrame({
        "task": shown["task"], "label": shown["label"], "comparison": shown["fusion"] + " − " + shown["other"],
        "n": shown["n"].astype("Int64").astype(str), "runs": shown["runs"].astype(str),
        "difference [95% CI]": [_ci(d, lo, hi, True) for d, lo, hi in zip(shown["diff"], shown["lo"], shown["hi"])],
        "over runs (corr. t)": [_ci(d, lo, hi, True) if np.isfinite(lo) else "–"
                                for d, lo, hi in zip(shown["diff"], shown["t_lo"], shown["t_hi"])],
        "p": [_f(p) for p in shown["p"]], f"p Holm (m={n_p})": [_f(p) for p in shown["p_adj"]],
        "verdict": shown["verdict"]})  # fmt: skip
    table.attrs["title"] = "Fusion vs the other models, paired on the same stays"
    s.tables.insert(0, table)
    for name in ("comparisons_no_cxr",):
        if name in tables and len(tables[name]):
            s.tables.append(tables[name])
    return s


def best_single_part(best: pd.DataFrame) -> tuple[list[str], pd.DataFrame | None]:
    """The reading's sentences and the table of each fusion model vs the single modality chosen on validation."""
    if len(best) == 0:
        return [], None
    au_better = int((best["auroc_lo"] > 0).sum())
    text = [f"Against the single modality with the higher validation AUROC (chosen on validation predictions, never "
            f"on test), {au_better} of {len(best)} fusion runs have a test AUROC gain whose 95 % paired bootstrap "
            f"interval lies above 0."]  # fmt: skip
    table = pd.DataFrame({
        "task": best["task"], "fold": best["fold"].astype(str), "seed": best["seed"].astype(str),
        "fusion": best["fusion"], "comparator": best["comparator"], "validation AUROC": best["why"],
        "n": best["n"].astype(str),
        "Δ AUROC [95% CI]": [_ci(v, lo, hi, True) for v, lo, hi in zip(best["auroc"], best["auroc_lo"], best["auroc_hi"])],
        "Δ AUPRC [95% CI]": [_ci(v, lo, hi, True) for v, lo, hi in zip(best["auprc"], best["auprc_lo"], best["auprc_hi"])],
    })  # fmt: skip
    table.attrs["title"] = "Fusion vs the best single modality chosen on validation"
    table.attrs["footnotes"] = [
        "Comparator: of the runs on EHR alone and CXR alone with the same task, fold, seed and training conditions, "
        "the one with the higher AUROC on the validation stays both scored (predictions_val.csv). Differences: "
        f"fusion − comparator on the n test stays both scored, {P.N_BOOT} patient-level bootstrap replicates "
        f"(seed {P.SEED}), the same replicates for both models."]  # fmt: skip
    return text, table


def leaderboard_section(inputs: ReportInputs, tables: dict) -> Section:
    s = Section("leaderboard")
    board, others = V.leaderboard(inputs.metrics)
    if len(board) == 0:
        return s
    parts = []
    for task, b in board.groupby("task", sort=True):
        b = b.reset_index(drop=True)
        top = b.iloc[0]
        text = f"On {task}, {top['method']} has the highest test AUROC, {_ci(top['value'], top['lo'], top['hi'])}"
        if len(b) > 1:
            second = b.iloc[1]
            overlap = np.isfinite(top["lo"]) and np.isfinite(second["hi"]) and top["lo"] <= second["hi"]
            text += (f"; its 95 % interval {'overlaps' if overlap else 'does not overlap'} that of {second['method']} "
                     f"({_f(second['value'])}), so the order of the top two is "
                     + ("not resolved by these intervals" if overlap else "resolved by these intervals"))
        parts.append(text + ".")
    cd = V.critical_difference(inputs.metrics)
    if cd is None:
        parts.append("Too few methods or task × label blocks for the critical-difference diagram (Demšar 2006 needs "
                     "≥ 3 methods and ≥ 2 blocks).")  # fmt: skip
    s.reading = " ".join(parts)
    s.notes += _others_note(others)
    _add(s, "leaderboard", "Clean test AUROC per method with 95 % patient-level bootstrap intervals.", F.leaderboard(board))
    if cd is not None:
        _add(s, "cd_diagram", "Critical-difference diagram: mean AUROC ranks over task × label blocks (1 = best); "
             "methods joined by a bar are not distinguished by the Nemenyi test (α = 0.05).", F.cd_diagram(*cd))
    s.tables += [tables[k] for k in ("clean", "ranks_auroc", "costs") if k in tables and len(tables[k])]
    return s


def missing_section(inputs: ReportInputs, tables: dict) -> Section:
    s = Section("missing")
    curves = V.missing_curves(inputs.missing)
    if len(curves) == 0:
        s.reading = "No missing-modality results yet: run `mmfair eval-missing --rate 0.2 --rate 0.5 --rate 1.0`."
        return s
    parts = []
    au = curves[curves["metric"] == "auroc"]
    for mech, b in au.groupby("mechanism", sort=True):
        drops, undefined = [], []
        for method, line in b.groupby("method"):
            line = line.sort_values("x")
            defined = line[np.isfinite(line["value"].to_numpy(dtype=float))]
            if len(defined) < len(line):
                undefined.append(f"{method} (from a rate of {line.loc[~line.index.isin(defined.index), 'x'].min():.2f})")
            if len(defined) > 1:
                drops.append((defined["value"].iloc[-1] - defined["value"].iloc[0], method, defined["x"].iloc[-1],
                              defined["value"].iloc[0], defined["value"].iloc[-1]))  # fmt: skip
        if undefined:
            parts.append(f"Under {mech}, undefined (the model cannot score stays whose modality was removed): "
                         + ", ".join(undefined) + ".")
        if drops:
            best, worst = max(drops), min(drops)
            parts.append(f"Under {mech}, at a missing rate of {worst[2]:.2f} the AUROC of {worst[1]} moves from "
                         f"{_f(worst[3])} to {_f(worst[4])} ({_f(worst[0], True)}), the largest change; "
                         f"{best[1]} changes least ({_f(best[0], True)}).")  # fmt: skip
    parts.append("Bands are the 95 % bootstrap intervals of each point (draws averaged); RR, ER and r* below summarise "
                 "each curve.")  # fmt: skip
    s.reading = " ".join(parts)
    _add(s, "missing_auroc", "Test AUROC vs the share of stays whose modality was removed, one line per method with "
         "its 95 % band, per mechanism; scored on the stays of the table below (its n).",
         F.missing_curves(curves, "auroc"))  # fmt: skip
    gaps = V.missing_curves(inputs.missing, gaps=True)
    for metric, label in V.GAPS.items():
        _add(s, f"missing_{metric}", f"{label} vs missing rate per attribute (lower is fairer), 95 % bands.",
             F.missing_curves(gaps, metric, ylabel=label))
    if len(gaps) == 0:
        s.notes.append("Fairness-gap curves appear after `mmfair eval-missing --attribute race_group` (or another "
                       "attribute).")  # fmt: skip
    grid = V.dropout_grid(inputs.missing)
    if len(grid):
        grid = grid.assign(**{c: grid[c].map(_f) for c in grid.columns if c.startswith("test ")})
        grid.attrs["title"] = "Train-time missingness × test-time missing rate (AUROC)"
        s.tables.append(grid)
    s.tables += [tables[k] for k in ("robustness", "robustness_gaps", "missing", "missing_profiles")
                 if k in tables and len(tables[k])]
    return s


def fairness_section(inputs: ReportInputs, tables: dict, min_group_size: int) -> Section:
    s = Section("fairness")
    estimates, n_hidden, others = V.group_estimates(inputs.fairness, min_group_size)
    if len(estimates) == 0:
        s.reading = "No fairness results yet: run `mmfair eval-fair`."
        return s
    worst, _ = V.worst_gaps(inputs.fairness)
    points = V.fairness_points(inputs.metrics, inputs.fairness, min_group_size)
    parts = []
    if len(worst):
        w = worst.iloc[0]
        parts.append(f"The largest equalized-odds gap (the larger of the TPR and FPR differences between groups, at the "
                     f"validation-chosen threshold) is {w['method']}'s on {w['attribute']}: "
                     f"{_ci(w['value'], w['lo'], w['hi'])} (95 % patient-level bootstrap).")  # fmt: skip
    au = estimates[estimates["metric"] == "auroc"]
    if len(au):
        low = au.loc[au["value"].idxmin()]
        parts.append(f"The lowest group AUROC shown is {low['method']} on {low['attribute']} = {low['group']}, "
                     f"{_ci(low['value'], low['lo'], low['hi'])}.")
    if len(points):
        fronts = [f"{a}: {', '.join(sorted(b.loc[b['pareto'], 'method']))}" for a, b in points.groupby("attribute")]
        parts.append("On the AUROC–gap plane, the Pareto front (no method both more accurate and fairer) holds "
                     + "; ".join(fronts) + ". It describes test results and selects nothing.")
    if n_hidden:
        parts.append(f"{n_hidden} group(s) are left out of every figure under the small-cell rule (fewer than "
                     f"{min_group_size} stays, positives or negatives, plus complementary cells).")  # fmt: skip
    s.reading = " ".join(parts)
    s.notes += _others_note(others)
    _add(s, "group_forest", "Per-group AUROC, TPR and FPR with 95 % intervals (label all; rates at the validation "
         "threshold); small cells suppressed.", F.group_forest(estimates))  # fmt: skip
    _add(s, "fairness_scatter", "Test AUROC vs equalized-odds gap per method and attribute; outlined points and the "
         "dashed line: the Pareto front (descriptive, not a selection).", F.fairness_scatter(points))  # fmt: skip
    _add_reliability(s, inputs.reliability, min_group_size)
    s.tables += [tables[k] for k in ("fairness_gaps", "gap_comparisons", "selection_rules") if k in tables and len(tables[k])]
    if "fairness_groups" in tables and len(tables["fairness_groups"]):
        s.tables.append(tables["fairness_groups"])
    return s


def _add_reliability(section: Section, curves: pd.DataFrame, min_group_size: int) -> None:
    """One reliability figure per task (``reliability_<task>``)."""
    for task, part in curves.groupby("task", sort=True):
        _add(section, f"reliability_{task}", f"Reliability per group ({task}, test predictions, pooled over each "
             f"method's runs): observed share of positives vs mean predicted risk in {P.N_BINS} equal-width bins of "
             f"[0, 1]; the dashed diagonal is perfect calibration. Bins with fewer than {min_group_size} stays are not "
             "drawn; small groups (and their complementary cells) not at all.", F.reliability(part))  # fmt: skip


def addition_section(inputs: ReportInputs) -> Section:
    s = Section("addition")
    steps = inputs.addition
    if len(steps) == 0:
        s.reading = ("No incremental paths yet: train the modality subsets of one task, fold and seed, e.g. "
                     "`mmfair train --modalities static --modalities ehr,static --modalities ehr,cxr,static`, then "
                     "`mmfair eval-fair`.")  # fmt: skip
        return s
    au = steps[steps["quantity"] == "AUROC"]
    parts = [_addition_sentence(b.iloc[0], steps) if len(b) == 1 else _addition_summary(b)
             for _, b in au.groupby(["task", "method", "from", "added"], sort=False)]  # fmt: skip
    paired = np.isfinite(steps["n"].to_numpy(dtype=float))
    if paired.any():
        parts.append(f"Each change is after − before on the test stays both runs scored (n), with a 95 % paired "
                     f"patient-level bootstrap interval ({P.N_BOOT} replicates, seed {P.SEED}); gaps use the groups "
                     "that pass the small-cell rule and each run's validation threshold.")  # fmt: skip
    if not paired.all():
        parts.append("Where n is empty the runs' predictions were not found: the change is the difference of the two "
                     "runs' point estimates in the results tables, with no interval.")  # fmt: skip
    s.reading = " ".join(parts)
    table = steps.drop(columns=["run_before", "run_after", "lo", "hi"]).assign(
        before=steps["before"].map(_f), after=steps["after"].map(_f),
        change=[_ci(v, lo, hi, True) for v, lo, hi in zip(steps["change"], steps["lo"], steps["hi"])],
        n=steps["n"].astype("Int64").astype(str).replace("<NA>", "")).rename(columns={"change": "change [95% CI]"})
    table.attrs["title"] = "Change per added modality"
    s.tables.append(table)
    return s


def _addition_summary(au: pd.DataFrame) -> str:
    """One step repeated over folds or seeds, in words: the mean AUROC change and what the intervals show."""
    r = au.iloc[0]
    lo, hi = au["lo"].to_numpy(dtype=float), au["hi"].to_numpy(dtype=float)
    return (f"For {r['method']}, adding {r['added']} to {r['from']} ({r['task']}, {len(au)} folds or seeds) changes "
            f"AUROC by {_f(au['change'].mean(), True)} on average; the interval lies above 0 in {int((lo > 0).sum())} "
            f"and below 0 in {int((hi < 0).sum())} of them.")  # fmt: skip


def _addition_sentence(r: pd.Series, steps: pd.DataFrame) -> str:
    """One step in words: the AUROC change and the gaps whose interval shows a widening."""
    same = ["task", "fold", "seed", "stays", "method", "from", "to"]
    gaps = steps[(steps[same] == r[same]).all(axis=1) & ~steps["quantity"].isin(["AUROC", "AUPRC"])]
    paired = np.isfinite(gaps["lo"].to_numpy(dtype=float)).any()
    wider = gaps[gaps["lo"] > 0] if paired else gaps[gaps["change"] > 0]
    text = (f"For {r['method']}, adding {r['added']} to {r['from']} ({r['task']}) changes AUROC by "
            f"{_ci(r['change'], r['lo'], r['hi'], True)}")  # fmt: skip
    if len(wider):
        top = wider.loc[wider["change"].idxmax()]
        text += (f" and widens {len(wider)} of {len(gaps)} gaps{' (interval above 0)' if paired else ''}, most the "
                 f"{top['quantity']} on {top['attribute']} ({_ci(top['change'], top['lo'], top['hi'], True)})")
    return text + "."


def contributions_section(inputs: ReportInputs, tables: dict, min_group_size: int) -> Section:
    s = Section("contributions")
    values = V.shapley_values(inputs.missing, min_group_size)
    lacking = V.missing_subset_runs(inputs.metrics)
    if len(values) == 0:
        s.reading = "No modality Shapley values yet." + (
            " They need these subset runs (then `mmfair eval-missing`): " + "; ".join(f"`{c}`" for c in lacking)
            if lacking else " Train a fusion model and its single-modality runs, then run `mmfair eval-missing`.")
        return s
    overall = values[values["attribute"] == "all"]
    parts = []
    for method, b in overall.groupby("method", sort=True):
        parts.append(f"For {method}, " + ", ".join(f"φ {r.player} = {_ci(r.value, r.lo, r.hi, True)}"
                                                   for r in b.itertuples()) + " (AUROC units, paired bootstrap).")
    groups = values[values["attribute"] != "all"]
    if len(groups):
        spread = groups.groupby(["method", "player"])["value"].agg(lambda v: v.max() - v.min())
        (method, player), width = spread.idxmax(), spread.max()
        parts.append(f"Across groups, φ {player} of {method} varies most (range {_f(width)}).")
    if lacking:
        parts.append("Missing subset runs: " + "; ".join(f"`{c}`" for c in lacking) + ".")
    s.reading = " ".join(parts)
    _add(s, "shapley", "Modality Shapley values (φ, AUROC units) with 95 % intervals, overall and per group; small "
         "cells suppressed.", F.shapley_bars(values))  # fmt: skip
    if "shapley" in tables and len(tables["shapley"]):
        s.tables.append(tables["shapley"])
    return s


def cohort_section(inputs: ReportInputs, min_group_size: int) -> Section:
    s = Section("cohort")
    if inputs.attrition is None and not inputs.prep:
        s.reading = "No prepared data in this workspace (data/prep.json, attrition.csv): run `mmfair prep`."
        return s
    p = inputs.prep
    parts = []
    if p:
        parts.append(f"{p.get('n_stays', 0):,} ICU stays of {p.get('n_subjects', 0):,} patients "
                     f"({p.get('source', 'unknown source')}); {p.get('n_with_cxr', 0):,} have a CXR.")
    avail = inputs.availability
    if avail is not None and len(avail[~avail["suppressed"]]):
        shown = avail[~avail["suppressed"]]
        lo, hi = shown.loc[shown["share"].idxmin()], shown.loc[shown["share"].idxmax()]
        parts.append(f"CXR availability is structured: it ranges from {lo['share']:.0%} of stays ({lo['attribute']} = "
                     f"{lo['group']}) to {hi['share']:.0%} ({hi['attribute']} = {hi['group']}).")
    s.reading = " ".join(parts) or NOTHING
    if inputs.attrition is not None:
        steps = suppress_attrition(inputs.attrition, min_group_size)
        _add(s, "attrition", "Cohort attrition: stays kept after each step, stays removed beside each arrow.",
             F.attrition_flow(steps))
        steps.attrs["title"] = "Attrition"
        s.tables.append(steps)
    _add(s, "cxr_availability", "Share of stays with a CXR per group (small cells suppressed).",
         F.cxr_availability(avail))
    if inputs.table1 is not None:
        s.tables.append(table_one(inputs.table1, min_group_size))
    return s


def table_one(table1: pd.DataFrame, min_group_size: int) -> pd.DataFrame:
    """Table 1 of the whole cohort (prep's ``by = all`` rows), suppressed cells shown as the marker."""
    t = table1[table1["by"].astype(str) == "all"]
    mark = marker(min_group_size)
    out = []
    for r in t.itertuples():
        if str(r.suppressed) in ("1", "True", "true"):
            value = mark
        elif pd.notna(r.mean):
            value = f"{r.mean:.1f} ± {r.sd:.1f}"
        else:
            value = f"{int(r.count):,}" + (f" ({r.percent:.1f}%)" if pd.notna(r.percent) else "")
        out.append({"characteristic": r.characteristic, "level": "" if pd.isna(r.level) else str(r.level),
                    "value": value})
    df = pd.DataFrame(out, columns=["characteristic", "level", "value"])
    df.attrs["title"] = "Table 1 (whole cohort)"
    return df


def _git_commit() -> str:
    root = Path(mmfair.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _device() -> str:
    """The accelerator of the report host (the results do not record the device each run trained on)."""
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    return "CPU only"


def provenance(inputs: ReportInputs) -> pd.DataFrame:
    """Which code, data and machine the report and its results come from."""
    rows = [("mmfair (this report)", mmfair.__version__), ("git commit", _git_commit())]
    frames = [d for d in (inputs.metrics, inputs.missing, inputs.fairness) if len(d)]
    if frames:
        allrows = pd.concat(frames, ignore_index=True)
        versions = sorted(set(allrows["mmfair_version"].astype(str)) - {""})
        protocols = sorted(set(allrows["protocol"].dropna().astype(str)))
        rows.append(("mmfair versions in the results", ", ".join(versions) or "unrecorded"))
        rows.append(("evaluation protocols in the results", ", ".join(protocols) or "unrecorded"))
    p = inputs.prep
    if p:
        rows += [(label, str(p.get(key, "unknown"))) for label, key in
                 (("data fingerprint", "fingerprint"), ("MIMIC-IV version", "mimic_version"), ("source", "source"))]
        enc = p.get("encoder") or {}
        if isinstance(enc, dict) and enc.get("encoder_id"):
            rows.append(("CXR encoder", str(enc["encoder_id"])))
        card = enc.get("card") if isinstance(enc, dict) else None
        if isinstance(card, dict) and card.get("pretraining_data"):
            rows.append(("CXR encoder pretraining data", str(card["pretraining_data"])))
    for name in PACKAGES:
        try:
            rows.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            continue
    rows.append(("report host", f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, "
                 f"{_device()}"))
    df = pd.DataFrame(rows, columns=["item", "value"])
    df.attrs["title"] = "Provenance"
    return df


def provenance_section(inputs: ReportInputs) -> Section:
    s = Section("provenance")
    table = provenance(inputs)
    fp = inputs.prep.get("fingerprint") if inputs.prep else None
    s.reading = (f"Built by mmfair {mmfair.__version__} from the tidy results tables (and, for the reliability "
                 "diagrams, the comparison with the best single modality and the modality-addition intervals, the "
                 "finished runs' stored predictions)"
                 + (f", on prepared data with fingerprint {fp}" if fp else "") + ". Package versions and the git "
                 "commit are those of the process that wrote this report.")
    warnings = provenance_warnings(table, inputs.prep or {})
    if warnings:
        s.reading = "Warning: " + " ".join(warnings) + " " + s.reading
    s.tables.append(table)
    return s


def provenance_warnings(table: pd.DataFrame, prep: dict) -> list[str]:
    """What a reader must know before trusting the numbers: results from several mmfair versions or protocols,
    and a CXR encoder that saw MIMIC-CXR (then it has seen test patients' images)."""
    value = dict(zip(table["item"], table["value"]))
    out = [f"the results mix {what} ({value[item]}); re-evaluate with one mmfair before comparing rows."
           for item, what in (("mmfair versions in the results", "mmfair versions"),
                              ("evaluation protocols in the results", "evaluation protocols"))
           if "," in str(value.get(item, ""))]  # fmt: skip
    card = (prep.get("encoder") or {}).get("card") if isinstance(prep.get("encoder"), dict) else None
    if isinstance(card, dict) and card.get("provenance_warning"):
        out.append(str(card["provenance_warning"]))
    return out


def build_sections(inputs: ReportInputs, tables: dict[str, pd.DataFrame], min_group_size: int = 10) -> list[Section]:
    """Every section of the report, in order (figures as matplotlib ``Figure`` objects)."""
    return [fusion_section(inputs, tables), leaderboard_section(inputs, tables), missing_section(inputs, tables),
            fairness_section(inputs, tables, min_group_size), addition_section(inputs),
            contributions_section(inputs, tables, min_group_size), cohort_section(inputs, min_group_size),
            provenance_section(inputs)]  # fmt: skip


# ------------------------------------------------------------------------------------------------ HTML

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#1a1a1a;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1em;margin-bottom:.3em}
p.reading{background:#f4f8fb;border-left:4px solid #0072B2;padding:.6em .8em}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.85em;color:#444}
table{border-collapse:collapse;font-size:.78em;margin:.5em 0 1em}th,td{padding:.15em .5em;text-align:left;
border-bottom:1px solid #e3e3e3;white-space:nowrap}th{background:#f2f2f2}
.scroll{overflow-x:auto}.note{font-size:.8em;color:#555}nav a{margin-right:.8em}
details summary{cursor:pointer;color:#0072B2}
"""


def _table_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if pd.isna(v) else str(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))  # fmt: skip
    title = html.escape(str(df.attrs.get("title", "")))
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in df.attrs.get("footnotes", []) if n)
    table = f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    if len(df) > 15:
        return f"<details><summary>{title} ({len(df)} rows)</summary>{table}{notes}</details>"
    return f"<h3>{title}</h3>{table}{notes}"


def render_html(sections: list[Section], title: str = "mmfair report") -> str:
    """One self-contained HTML page (inline CSS and SVG; no script, no external resource)."""
    nav = "".join(f"<a href='#{s.key}'>{html.escape(s.title)}</a>" for s in sections)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p class='note'>Aggregates only (no patient rows), built from the tidy "
             "results tables and the runs' stored predictions; intervals are 95 % patient-level bootstrap intervals; thresholds were chosen on "
             "validation; small cells are suppressed in every table and figure.</p>", f"<nav>{nav}</nav>"]  # fmt: skip
    for s in sections:
        parts.append(f"<section id='{s.key}'><h2>{html.escape(s.title)}</h2><p class='reading'>{_inline(s.reading)}</p>")
        for name, caption, fig in s.figures:
            parts.append(f"<figure data-figure='{name}'>{_sized(F.to_svg(fig))}"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in s.notes]
        parts += [_table_html(t) for t in s.tables]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _sized(svg: str) -> str:
    """The SVG at 1.75 px per point of its natural width (a column figure ~440 px, a double one fills the
    page), never wider than the page; text keeps one size across figures."""
    match = re.search(r'width="([\d.]+)pt"', svg[:400])
    if not match:
        return svg
    return svg.replace("<svg ", f"<svg style='width:{float(match.group(1)) * 1.75:.0f}px' ", 1)


def _inline(text: str) -> str:
    """Escape, then show `code` spans as <code>."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def write_figures(sections: list[Section], directory: Path) -> list[Path]:
    """Every figure of the sections as ``directory/<name>.png`` (300 dpi) and ``.pdf``."""
    paths: list[Path] = []
    for s in sections:
        for name, _, fig in s.figures:
            paths += F.save(fig, Path(directory) / name)
    return paths
