"""Tidy results → tables (DataFrames) → markdown / CSV / Rich. Pure functions; the small-cell rule lives here.

Public surface::

    build_tables(metrics, missing, fairness, min_group_size=10) -> dict[str, DataFrame]
    render_markdown(tables) -> str
    render_csv(tables) -> str
    render_rich(tables) -> list[rich.table.Table]

The HTML / LaTeX report and its figures: :mod:`.inputs` (load_inputs), :mod:`.views` (the numbers),
:mod:`.figures` (one function per figure), :mod:`.html` (build_sections, render_html), :mod:`.latex`;
the compact terminal report: :func:`.render.render_terminal`.
"""

from mmfair.core.reporting.render import render_csv, render_markdown, render_rich
from mmfair.core.reporting.suppression import SUPPRESSED_MARKER
from mmfair.core.reporting.tables import NA, build_tables

__all__ = ["build_tables", "render_markdown", "render_csv", "render_rich", "NA", "SUPPRESSED_MARKER"]
