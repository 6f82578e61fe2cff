"""`mmfair report`: tables from the tidy results (terminal, markdown or csv)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmfair.cli import _util
from mmfair.core.config import ReportConfig


def report_cmd(
    ctx: typer.Context,
    format: Annotated[str, typer.Option("--format", help="terminal | markdown | csv.")] = "terminal",
    out: Annotated[Optional[Path], typer.Option(help="Output file (default <workspace>/reports/report.md or .csv).")] = None,
    min_group_size: Annotated[Optional[int], typer.Option(help="Suppress subgroup cells with n, n_pos or n − n_pos below this.")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Reference method of the rank tests (Wilcoxon–Holm; default late). The paired comparisons use the reference given to eval-fair.")] = None,
) -> None:
    """Methods × missing rate and methods × subgroup tables, costs, paired comparisons with a reference,
    rank tests across methods and the checkpoint selection rules side by side, from results/*.csv only.

    Reports hold aggregates only, with small cells suppressed, as MIMIC's data use agreement requires.
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core import pipeline

        cfg = _util.build_config(ReportConfig, None, format=format, out=out, min_group_size=min_group_size,
                                 reference=reference)
        tables, path, _ = pipeline.report(cfg, ws)
    if cfg.format == "terminal":
        from mmfair.core.reporting import render_rich

        for table in render_rich(tables):
            _util.out.print(table)
    else:
        _util.out.print(f"report written to {path}")
