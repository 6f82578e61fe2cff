"""`mmfair eval-missing`: performance as a modality goes missing from test stays, and its robustness summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmfair.cli import _util
from mmfair.core.config import BASELINE_METHOD, EvalMissingConfig, ReportConfig
from mmfair.core.registry import SCENARIOS

_MECHANISMS = " | ".join(SCENARIOS.names())  # the registry's, plugins included


def eval_missing_cmd(
    ctx: typer.Context,
    mechanism: Annotated[Optional[str], typer.Option("--mechanism", "-m", help=f"{_MECHANISMS} (see `mmfair list`).")] = None,
    rate: Annotated[Optional[list[float]], typer.Option("--rate", "-r", help="mcar: share of test stays with the modality that lose it; ehr_*: share of test stays perturbed (repeatable; 0 is always added; default 0.2, 0.5, 1).")] = None,
    rates: Annotated[Optional[list[str]], typer.Option("--rates", help="group/label: per-level shares, e.g. WHITE=0.1,BLACK=0.4 or 1=0.6,0=0.2; '*' = every other level (repeatable: one curve point each).")] = None,
    by: Annotated[Optional[str], typer.Option("--by", help="group: the attribute column, e.g. race_group.")] = None,
    groups: Annotated[Optional[list[str]], typer.Option("--groups", help="ehr_group: EHR variable groups to remove, e.g. vitals,labs,neuro (comma-separated or repeated).")] = None,
    hours: Annotated[Optional[int], typer.Option("--hours", help="ehr_last_hours: remove the last K hours of the observation window.")] = None,
    noise_sd: Annotated[Optional[float], typer.Option("--noise-sd", help="ehr_noise: noise sd in units of each variable's training-fold IQR.")] = None,
    attribute: Annotated[Optional[list[str]], typer.Option("--attribute", "-a", help="Also per-group AUROC and the AUROC, equalized-odds and demographic-parity gaps (validation threshold) for this attribute, with their robustness summaries (repeatable; group: --by by default).")] = None,
    modality: Annotated[Optional[str], typer.Option("--modality", help="cxr | ehr (the whole EHR, through the presence flags) | static (the static fields made unobserved; runs without the static modality have nothing to remove).")] = None,
    draws: Annotated[Optional[int], typer.Option(help="Random draws per rate (each recorded with its seed; default 5; intervals pool them).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Base seed of the draws.")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="Bootstrap replicates for confidence intervals (default 1000).")] = None,
    min_group_size: Annotated[Optional[int], typer.Option(help="Gaps leave out groups with n, n_pos or n − n_pos below this (default 10).")] = None,
    reference: Annotated[Optional[str], typer.Option(help=f"Reference method of effective robustness (default {BASELINE_METHOD}).")] = None,
    test_cohort: Annotated[Optional[str], typer.Option("--test-cohort", help="full (every test stay, default) or matched (only test stays with a CXR); recorded in the test_cohort column.")] = None,
    run: Annotated[Optional[list[str]], typer.Option("--run", help="Only these run ids (repeatable); default every finished run.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML/TOML file with these options.")] = None,
) -> None:
    """Re-score every finished run with a modality removed from test stays, under one mechanism.

    mcar: exactly round(rate × n) of the stays that have the modality lose it, stratified on the label (the
    same rule as train --train-missing-rate); every rate is scored on the stays that had it (test_cohort
    matched, evaluated_on with_cxr), and each row records the realised count and share removed.
    group: exactly round(r_g × n_g) within each listed group (--by race_group --rates WHITE=0.1,BLACK=0.4).
    label: the rate depends on the outcome (--rates 1=0.6,0=0.2). natural: the full test fold as it is.
    EHR imperfections (--rate = share of test stays perturbed, label-stratified; applied to the raw
    values before the mask, forward fill, median fill and scaling, so removal is real absence):
    ehr_group --groups vitals,labs (whole variable groups), ehr_last_hours --hours 12 (the last k
    hours), ehr_noise --noise-sd 0.5 (Gaussian noise, sd = 0.5 × training IQR, on observed values).
    Removal goes through the presence flags — never a blank image pushed through a network. Rows go to
    <workspace>/results/missing.csv (replaced, not appended, on a rerun), followed by the robustness
    summaries (relative and effective robustness, r*) recomputed from every curve in that file — AUROC,
    AUPRC and, with --attribute, the fairness gaps (lower is better) — and
    the modality Shapley values of every fusion run whose modality-subset runs (same task, fold, seed)
    are finished, overall and per group (`shapley_attributes` in a --config file).
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core import pipeline

        cfg = _util.config_from_options(EvalMissingConfig, ctx.params,
                                        {"rate": "rates", "rates": "level_rates", "attribute": "attributes"})
        rows = pipeline.eval_missing(cfg, ws, run_ids=run)
        tables = pipeline.report_tables(ReportConfig(min_group_size=cfg.min_group_size), ws)
    from mmfair.core.reporting import render_rich

    for table in render_rich({k: v for k, v in tables.items() if k.startswith(("missing", "robustness", "shapley"))}):
        _util.out.print(table)
    _util.out.print(f"rows in {ws.missing_csv}")
    for line in pipeline.not_evaluated_lines(rows):
        _util.err.print(line, markup=False, highlight=False, soft_wrap=True)
