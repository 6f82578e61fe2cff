"""`mmfair report`: the report from the tidy results (terminal, html, markdown, latex or csv)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmfair.cli import _util
from mmfair.core.config import BASELINE_METHOD, ReportConfig


def report_cmd(
    ctx: typer.Context,
    format: Annotated[Optional[str], typer.Option("--format", help="terminal (default) | html | markdown | latex | csv.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output file (default <workspace>/reports/report.html, .md, .tex or .csv).")] = None,
    min_group_size: Annotated[Optional[int], typer.Option(help="Suppress subgroup cells with n, n_pos or n − n_pos below this.")] = None,
    reference: Annotated[Optional[str], typer.Option(help=f"Reference method of the rank tests (Wilcoxon–Holm; default {BASELINE_METHOD}). The paired comparisons use the reference given to eval-fair.")] = None,
    detail: Annotated[bool, typer.Option("--detail", help="Terminal: also the per-group and full tables.")] = False,
    figures: Annotated[Optional[bool], typer.Option("--figures/--no-figures", help="html/latex: also write figures/*.png and .pdf beside the report (default on).")] = None,
) -> None:
    """When fusion helps, the leaderboard, robustness to a missing modality, fairness, modality contributions,
    the cohort and provenance, from results/*.csv and data/*.csv only. `--format html` writes one
    self-contained page with figures (reports/report.html); the terminal shows a compact summary.

    Reports hold aggregates only, with small cells suppressed in every table and figure, as MIMIC's data use
    agreement requires.
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core import pipeline

        cfg = _util.config_from_options(ReportConfig, ctx.params)
        tables, path, _ = pipeline.report(cfg, ws)
        if cfg.format == "terminal":
            from mmfair.core.reporting.inputs import load_inputs
            from mmfair.core.reporting.render import render_terminal

            inputs = load_inputs(ws, cfg.min_group_size)
            for item in render_terminal(tables, inputs, detail=cfg.detail, min_group_size=cfg.min_group_size,
                                        width=cfg.width):
                _util.out.print(item)
            return
    _util.out.print(f"report written to {path}", soft_wrap=True)
