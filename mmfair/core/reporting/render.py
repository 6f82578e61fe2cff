"""Renderers: display tables (from :func:`build_tables`) → markdown, CSV, Rich.

They only lay out what :func:`~mmfair.core.reporting.tables.build_tables` produced (already suppressed
under the small-cell rule); they compute nothing.
"""

from __future__ import annotations

import io

import pandas as pd
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
