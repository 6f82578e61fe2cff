"""Renderers: display tables (from :func:`build_tables`) → markdown, CSV, Rich.

They only lay out what :func:`~mmfair.core.reporting.tables.build_tables` produced (already suppressed
under the small-cell rule); they compute nothing.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np

import pandas as pd
from rich import box
from rich.table import Table
from rich.text import Text

INTRO = (
    "Aggregates only (no patient rows). Every number comes from the tidy results tables "
    "(`results/metrics.csv`, `missing.csv`, `fairness.csv`); intervals are 95 % patient-level bootstrap "
    "percentile intervals; thresholds were chosen on validation predictions, never on test."
)


def _md_escape(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_md_escape(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_md_escape(v) for v in row.tolist()) + " |")
    return "\n".join(lines)


def render_markdown(tables: dict[str, pd.DataFrame], title: str = "mmfair report") -> str:
    """A complete ``report.md``: title, one section per table with what it means, and its footnotes."""
    parts = [f"# {title}", "", INTRO, ""]
    for name, df in tables.items():
        parts += [f"## {df.attrs.get('title', name)}", "", df.attrs.get("description", ""), ""]
        # an empty table keeps its footnotes: they may say why it is empty (e.g. too few methods to rank)
        parts += ["_No results yet._" if len(df) == 0 else _markdown_table(df), ""]
        for note in df.attrs.get("footnotes", []):
            parts.append(f"> {note}")
        if df.attrs.get("footnotes"):
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def render_csv(tables: dict[str, pd.DataFrame]) -> str:
    """All tables in one CSV, with a leading ``table`` column naming the table of each row."""
    frames = [df.assign(table=name)[["table", *df.columns]] for name, df in tables.items() if len(df)]
    if not frames:
        return "table\n"
    buf = io.StringIO()
    pd.concat(frames, ignore_index=True).fillna("").to_csv(buf, index=False)
    return buf.getvalue()


_KEY_COLUMNS = ("modalities", "task", "selection", "threshold_rule", "test_cohort", "label", "runs", "scenario",
                "removed", "modality", "reference", "fold", "seed")


def render_rich(tables: dict[str, pd.DataFrame]) -> list[Table]:
    """One ``rich.table.Table`` per non-empty table, footnotes as the caption (the CLI prints them).

    A terminal is narrow: key columns that hold one value in every row (e.g. ``selection=overall``) are
    moved from the body into the title, so the numbers keep their width. Markdown and CSV keep them all.
    """
    out = []
    for name, df in tables.items():
        if len(df) == 0:
            continue
        constant = [c for c in df.columns if c in _KEY_COLUMNS and len(df) > 1 and df[c].astype(str).nunique() == 1]
        title = df.attrs.get("title", name)
        if constant:
            title += " (" + ", ".join(f"{c}: {df[c].iloc[0]}" for c in constant) + ")"
        body = df.drop(columns=constant)
        caption = "\n".join(df.attrs.get("footnotes", []))
        table = Table(title=title, caption=Text(caption) if caption else None, caption_justify="left")
        for col in body.columns:
            table.add_column(str(col), overflow="fold")
        for _, row in body.iterrows():
            table.add_row(*(Text(str(v)) for v in row.tolist()))  # never parsed as Rich markup
        out.append(table)
    return out


# ------------------------------------------------------------------------------------------ compact terminal

#: Widest cell of a compact table; longer text ends with "…" (method names with their conditions).
NAME_WIDTH = 26
#: Columns of names that shrink first when the terminal is narrow.
_FLEXIBLE = ("method", "comparison", "task", "attribute", "TPR lowest – highest group")


def _cut(text: object, width: int = NAME_WIDTH) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _ci(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else "")


def _compact(title: str, columns: list[str], rows: list[list[str]], caption: str = "") -> Table:
    """A borderless table whose cells never wrap (a cell too long is cut with "…")."""
    table = Table(title=title, box=box.SIMPLE_HEAD, caption=Text(caption) if caption else None,
                  caption_justify="left", title_justify="left", pad_edge=False)  # fmt: skip
    for i, col in enumerate(columns):
        # numbers keep their width on a narrow terminal; names give way first (cut with "…")
        fixed = None if col in _FLEXIBLE else max([len(col)] + [len(str(r[i])) for r in rows])
        table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=fixed)
    for row in rows:
        table.add_row(*(Text(str(v)) for v in row))
    return table


def render_terminal(tables: dict[str, pd.DataFrame], inputs, *, detail: bool = False,
                    min_group_size: int = 10, width: int = 100) -> list:  # fmt: skip
    """The default terminal report: a screen per section — leaderboard, fusion vs the other models,
    robustness summary, worst fairness gaps with their groups — for the default evaluation condition, the
    others listed by name. Rows and prose fit ``width`` (100) columns. ``detail``: every display table after them."""
    from mmfair.core.reporting import views as V

    out: list = []
    board, others = V.leaderboard(inputs.metrics)
    prc, _ = V.leaderboard(inputs.metrics, "auprc")
    prc_of = {(r.task, r.method): _ci(r.value, r.lo, r.hi) for r in prc.itertuples()}
    if len(board):
        rows = [[r.task, _cut(r.method), _ci(r.value, r.lo, r.hi), prc_of.get((r.task, r.method), "–"), str(r.runs)]
                for r in board.itertuples()]  # fmt: skip
        out.append(_compact("Leaderboard (clean test, 95% bootstrap CI)", ["task", "method", "AUROC", "AUPRC", "runs"],
                            rows))  # fmt: skip
    comp = V.paired_comparisons(inputs.fairness)
    if len(comp):
        rows = [[r.task, _cut(f"{r.fusion} − {r.other}", 32), _ci(r.diff, r.lo, r.hi),
                 r.verdict] for r in comp.itertuples()]  # fmt: skip
        out.append(_compact("When does fusion help? (paired AUROC difference, same stays)",
                            ["task", "comparison", "difference [95% CI]", "verdict"], rows))  # fmt: skip
    rob = tables.get("robustness")
    if rob is not None and len(rob):
        cols = [c for c in ("method", "scenario", "modality", "AUROC RR", "AUROC ER", "AUROC r*") if c in rob.columns]
        rows = [[_cut(r[c], NAME_WIDTH if c == "method" else 22) for c in cols] for _, r in rob.iterrows()]
        out.append(_compact("Robustness to a missing modality (AUROC)", cols, rows,
                            "RR: mean AUROC over the missing rates; ER: gain over the reference's curve; r*: first "
                            "rate where fusion stops beating the best single modality."))  # fmt: skip
    worst, gap_others = V.worst_gaps(inputs.fairness)
    estimates, n_hidden, _ = V.group_estimates(inputs.fairness, min_group_size, metrics=("tpr",))
    if len(worst):
        rows = []
        for r in worst.itertuples():
            tpr = estimates[(estimates["method"] == r.method) & (estimates["attribute"] == r.attribute)]
            lo = tpr.loc[tpr["value"].idxmin()] if len(tpr) else None
            hi = tpr.loc[tpr["value"].idxmax()] if len(tpr) else None
            span = f"{_cut(lo['group'], 10)} {lo['value']:.2f} – {_cut(hi['group'], 10)} {hi['value']:.2f}" \
                if lo is not None else "–"  # fmt: skip
            rows.append([_cut(r.method), r.attribute, _ci(r.value, r.lo, r.hi), span])
        caption = ("EO diff: the larger of the TPR and FPR gaps between groups, at the validation threshold."
                   + (f" {n_hidden} small group(s) suppressed." if n_hidden else ""))  # fmt: skip
        out.append(_compact("Worst fairness gap per method", ["method", "attribute", "EO diff [95% CI]",
                                                               "TPR lowest – highest group"], rows, caption))
    conditions = sorted(set(others) | set(gap_others))
    if conditions:
        out.append(_prose("Default condition shown; also in the results: " + ", ".join(conditions)
                          + " (`mmfair report --detail` or --format html).", width))  # fmt: skip
    if detail:
        out += render_rich(tables)
    else:
        out.append(_prose("Per-group and full tables: `mmfair report --detail`; figures: `mmfair report --format html`.",
                          width))  # fmt: skip
    return out


def _prose(text: str, width: int) -> Text:
    """A sentence wrapped at ``width`` columns whatever the terminal's width (a wide terminal would not wrap it)."""
    return Text("\n".join(textwrap.wrap(text, width=width, break_on_hyphens=False)))
