"""`mmfair eval-fair`: subgroup metrics and fairness gaps of every finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmfair.cli import _util
from mmfair.core.config import EvalFairConfig, ReportConfig


def eval_fair_cmd(
    ctx: typer.Context,
    attr: Annotated[Optional[list[str]], typer.Option("--attr", "-a", help="Sensitive attribute (repeatable): race_group, gender, age_group, insurance_group, …")] = None,
    threshold: Annotated[Optional[str], typer.Option(help="Operating point chosen on validation: val-youden (default), 0.5, or a number.")] = None,
    min_group_size: Annotated[Optional[int], typer.Option(help="Suppress subgroup cells with n, n_pos or n − n_pos below this.")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="Bootstrap replicates for confidence intervals.")] = None,
    run: Annotated[Optional[list[str]], typer.Option("--run", help="Only these run ids (repeatable).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML/TOML file with these options.")] = None,
) -> None:
    """Subgroup metrics and fairness gaps of every finished run, at a threshold chosen on validation.

    Per group: AUROC, AUPRC, TPR and FPR with n, n_pos and whether each is defined; gaps: demographic
    parity, equalized odds and equal opportunity differences. Rows go to <workspace>/results/fairness.csv.
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core import pipeline

        cfg = _util.build_config(
            EvalFairConfig,
            config,
            attributes=tuple(attr) if attr else None,
            threshold_rule=threshold,
            min_group_size=min_group_size,
            bootstrap=bootstrap,
        )
        pipeline.eval_fair(cfg, ws, run_ids=run)
        tables = pipeline.report_tables(ReportConfig(min_group_size=cfg.min_group_size), ws)
    from mmfair.core.reporting import render_rich

    for table in render_rich({k: v for k, v in tables.items() if k.startswith("fairness")}):
        _util.out.print(table)
    _util.out.print(f"rows in {ws.fairness_csv}")
