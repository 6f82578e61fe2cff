"""`mmfair eval-fair`: subgroup metrics and fairness gaps of every finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmfair.cli import _util
from mmfair.core.config import BASELINE_METHOD, EvalFairConfig, ReportConfig


def eval_fair_cmd(
    ctx: typer.Context,
    attr: Annotated[Optional[list[str]], typer.Option("--attr", "-a", help="Sensitive attribute (repeatable): race_group, gender, age_group, insurance_group, language_group, marital_status, admission_type, has_cxr, or an intersection of two such as race_group*gender.")] = None,
    threshold: Annotated[Optional[str], typer.Option(help="Operating point chosen on validation predictions: val-youden (default), val-sens-0.8, val-spec-0.8, val-prevalence, 0.5, or a number in (0, 1).")] = None,
    recalibrate: Annotated[Optional[str], typer.Option(help="Post-hoc recalibration fitted on validation before thresholds are chosen: none (default), platt, isotonic.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Bootstrap seed (the same for every run, so runs on one fold are paired).")] = None,
    min_group_size: Annotated[Optional[int], typer.Option(help="Suppress subgroup cells with n, n_pos or n − n_pos below this.")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="Bootstrap replicates for confidence intervals (default 1000).")] = None,
    test_cohort: Annotated[Optional[str], typer.Option("--test-cohort", help="full (every test stay, default) or matched (only test stays with a CXR); recorded in the test_cohort column.")] = None,
    reference: Annotated[Optional[str], typer.Option(help=f"Method every other is compared with on the same test stays (default {BASELINE_METHOD}; 'none' for no comparisons).")] = None,
    permutations: Annotated[Optional[int], typer.Option(help="Permutations of the paired tests (default 1000; 0: no p-values).")] = None,
    adjust: Annotated[Optional[str], typer.Option(help="p-value adjustment across a phenotype's labels: holm (default) or bh.")] = None,
    time_inference: Annotated[Optional[bool], typer.Option("--time-inference/--no-time-inference", help="Time each run's test predictions for the cost rows (loads the model; default on).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda (for timing inference).")] = None,
    patient_weighting: Annotated[Optional[bool], typer.Option("--patient-weighting/--no-patient-weighting", help="Also write clean AUROC, AUPRC and Brier with every patient counting once (weighting=patient rows in metrics.csv).")] = None,
    probe: Annotated[Optional[bool], typer.Option("--probe/--no-probe", help="Also probe how well gender, race group and age group can be predicted from each run's CXR, EHR and fused representations (probe_auroc rows; loads each model).")] = None,
    run: Annotated[Optional[list[str]], typer.Option("--run", help="Only these run ids (repeatable).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML/TOML file with these options.")] = None,
) -> None:
    """Subgroup metrics and fairness gaps of every finished run, at a threshold chosen on validation.

    Per group: prevalence, AUROC, AUPRC, TPR, FPR, PPV, selection rate, Brier, ECE with n, n_pos and whether
    each is defined; gaps: demographic parity difference and ratio, equalized odds (worst case and mean) with
    its TPR-gap / FPR-gap split, equal opportunity, AUROC gap, worst-group AUROC, ES-AUC, ECE and Brier gaps,
    all with patient-level bootstrap intervals. Gaps leave out groups below --min-group-size (the cells
    the report suppresses). Every method is compared with --reference on the same test stays (AUROC
    difference overall and on stays without a CXR, AUROC-gap difference per attribute: paired bootstrap
    interval, permutation p, Holm/BH across a phenotype's labels). Rows go to
    <workspace>/results/fairness.csv; cost rows (parameters, training seconds, peak memory, inference
    stays/s) to <workspace>/results/metrics.csv.
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core import pipeline

        cfg = _util.config_from_options(EvalFairConfig, ctx.params, {"attr": "attributes", "threshold": "threshold_rule"})
        rows = pipeline.eval_fair(cfg, ws, run_ids=run)
        tables = pipeline.report_tables(ReportConfig(min_group_size=cfg.min_group_size), ws)
    from mmfair.core.reporting import render_rich

    shown = ("fairness", "comparisons", "gap_comparisons", "selection_rules")
    for table in render_rich({k: v for k, v in tables.items() if k.startswith(shown)}):
        _util.out.print(table)
    _util.out.print(f"rows in {ws.fairness_csv}")
    for line in pipeline.not_evaluated_lines(rows):
        _util.err.print(line, markup=False, highlight=False, soft_wrap=True)
