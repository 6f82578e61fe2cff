"""`mmfair train`: one run per (fusion, task, fold, seed), then clean test metrics → results/metrics.csv."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Optional

import typer

from mmfair.cli import _tables, _util
from mmfair.core.config import TrainConfig


def train_cmd(
    ctx: typer.Context,
    fusion: Annotated[Optional[list[str]], typer.Option("--fusion", "-f", help="Method (repeatable); see `mmfair list fusions`.")] = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Task (repeatable): mortality, mortality_icu, phenotype.")] = None,
    fold: Annotated[Optional[list[int]], typer.Option("--fold", help="Test fold 0–4 (repeatable); validation is the next fold.")] = None,
    seed: Annotated[Optional[list[int]], typer.Option("--seed", help="Random seed (repeatable).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML/TOML file with training options.")] = None,
    ehr_encoder: Annotated[Optional[str], typer.Option(help="EHR encoder: lstm, gru, …; see `mmfair list encoders`.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs.")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early-stopping patience (epochs without a better validation AUPRC).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay.")] = None,
    hidden_dim: Annotated[Optional[int], typer.Option(help="Hidden size of encoders and heads.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N.")] = None,
    modulator: Annotated[Optional[str], typer.Option(help="Training strategy changing losses/gradients (ogm-ge, cggm, multifair, group-dro, fairgrad); see `mmfair list modulators`. Its hyperparameters: modulator_params in --config.")] = None,
    fair_attr: Annotated[Optional[str], typer.Option(help="Sensitive attribute whose groups group-aware modulators use in training (default race_group); never a model input.")] = None,
    selection: Annotated[Optional[list[str]], typer.Option("--selection", help="Extra checkpoint selection rule (repeatable): overall, worst_group, pareto, dto (MEDFAIR), chosen on validation over fair_attr's groups; each writes predictions_{val,test}_<rule>.csv.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates for the metrics' confidence intervals.")] = 200,
) -> None:
    """Train models on the prepared data (early stopping and thresholds on validation, never test).

    A run whose resolved config and data are unchanged is reused, not retrained. Clean test metrics with patient-level bootstrap CIs go to <workspace>/results/metrics.csv.
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        import mmfair.core.fusion  # noqa: F401
        import mmfair.core.training  # noqa: F401
        from mmfair.core import pipeline, registry

        fusions = fusion or [None]
        tasks = task or [None]
        for name in fusion or []:
            registry.FUSIONS.get(name)
        for name in task or []:
            registry.TASKS.get(name)
        if modulator is not None:
            registry.MODULATORS.get(modulator)
        configs = [
            _util.build_config(
                TrainConfig,
                config,
                fusion=f,
                task=t,
                fold=k,
                seed=s,
                ehr_encoder=ehr_encoder,
                epochs=epochs,
                patience=patience,
                batch_size=batch_size,
                lr=lr,
                weight_decay=weight_decay,
                hidden_dim=hidden_dim,
                device=device,
                modulator=modulator,
                fair_attr=fair_attr,
                selection_rules=tuple(selection) if selection else None,
            )
            for f, t, k, s in itertools.product(fusions, tasks, fold or [None], seed or [None])
        ]
        with _util.progress_bar() as progress:
            outcome = pipeline.train(configs, ws, bootstrap=bootstrap, progress=progress)
    reused = sum(r.skipped for r in outcome.runs)
    summary = _tables.metric_summary(outcome.metrics)
    _util.out.print(_tables.frame_table(summary, title="clean test metrics (95% patient-level bootstrap CI)"))
    _util.out.print(f"{len(outcome.runs)} run(s) in {ws.runs} ({reused} reused); metrics in {ws.metrics_csv}")
