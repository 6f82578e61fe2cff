"""`mmfair eval-missing`: performance as the CXR goes missing from a growing share of test stays."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmfair.cli import _util
from mmfair.core.config import EvalMissingConfig, ReportConfig


def eval_missing_cmd(
    ctx: typer.Context,
    rate: Annotated[Optional[list[float]], typer.Option("--rate", "-r", help="Share of test stays with a CXR that lose it (repeatable; 0 is always added).")] = None,
    draws: Annotated[Optional[int], typer.Option(help="Random draws per rate (each recorded with its seed).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Base seed of the draws.")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="Bootstrap replicates for confidence intervals.")] = None,
    run: Annotated[Optional[list[str]], typer.Option("--run", help="Only these run ids (repeatable); default every finished run.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML/TOML file with these options.")] = None,
) -> None:
    """Re-score every finished run with the CXR removed from a share of the test stays that have one.

    Exactly round(rate × n) stays lose their CXR, stratified on the label, through the presence flags —
    never a blank image pushed through a network. Rows go to <workspace>/results/missing.csv (replaced,
    not appended, on a rerun).
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core import pipeline

        cfg = _util.build_config(
            EvalMissingConfig,
            config,
            rates=tuple(rate) if rate else None,
            draws=draws,
            seed=seed,
            bootstrap=bootstrap,
            device=device,
        )
        pipeline.eval_missing(cfg, ws, run_ids=run)
        tables = pipeline.report_tables(ReportConfig(), ws)
    from mmfair.core.reporting import render_rich

    for table in render_rich({k: v for k, v in tables.items() if k.startswith("missing")}):
        _util.out.print(table)
    _util.out.print(f"rows in {ws.missing_csv}")
