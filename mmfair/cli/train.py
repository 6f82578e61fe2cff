"""`mmfair train`: one run per (fusion, task, fold, seed), then clean test metrics → results/metrics.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mmfair.cli import _tables, _util
from mmfair.core.config import CLEAN_BOOTSTRAP, TrainConfig, TrainPlan, load_config_file
from mmfair.core.errors import ConfigError


def train_cmd(
    ctx: typer.Context,
    fusion: Annotated[Optional[list[str]], typer.Option("--fusion", "-f", help="Method (repeatable); see `mmfair list fusions`.")] = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Task (repeatable): mortality, mortality_icu, phenotype, los.")] = None,
    fold: Annotated[Optional[list[int]], typer.Option("--fold", help="Test fold 0–4 (repeatable); validation is the next fold.")] = None,
    seed: Annotated[Optional[list[int]], typer.Option("--seed", help="Random seed (repeatable).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML/TOML file with training options.")] = None,
    ehr_encoder: Annotated[Optional[str], typer.Option(help="EHR encoder: lstm, gru, …; see `mmfair list encoders`.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs.")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early-stopping patience (epochs without a better validation AUPRC).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Weight decay (decoupled for adamw, an L2 term for adam and sgd).")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adamw (default), adam or sgd; the same for a modulated run and its unmodulated reference.")] = None,
    momentum: Annotated[Optional[float], typer.Option(help="SGD momentum (default 0.9; --optimizer sgd only).")] = None,
    modulate_via: Annotated[Optional[str], typer.Option(help="How a gradient-scaling modulator (ogm-ge, cggm, multifair, inforeg) applies its per-encoder factor: lr (default: scales that encoder's learning rate for the step, so the factor survives Adam's normalisation) or grad (multiplies its gradients, the papers' form).")] = None,
    hidden_dim: Annotated[Optional[int], typer.Option(help="Hidden size of encoders and heads.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N.")] = None,
    modulator: Annotated[Optional[str], typer.Option(help="Training strategy changing losses/gradients (ogm-ge, cggm, multifair, group-dro, fairgrad); see `mmfair list modulators`. Its hyperparameters: --modulator-param or modulator_params in --config.")] = None,
    modulator_param: Annotated[Optional[list[str]], typer.Option("--modulator-param", help="A modulator hyperparameter KEY=VALUE (repeatable), e.g. variant=official-code; applies to the modulator of --modulator or of a preset (--fusion multifair). Non-default values tag the method label, e.g. multifair[official-code].")] = None,
    fair_attr: Annotated[Optional[str], typer.Option(help="Sensitive attribute whose groups group-aware modulators use in training (default race_group); never a model input.")] = None,
    selection: Annotated[Optional[list[str]], typer.Option("--selection", help="Extra checkpoint selection rule (repeatable): overall, worst_group, pareto, dto (MEDFAIR), chosen on validation over fair_attr's groups; each writes predictions_{val,test}_<rule>.csv.")] = None,
    fusion_param: Annotated[Optional[list[str]], typer.Option("--fusion-param", help="A method hyperparameter KEY=VALUE (repeatable), e.g. depth=2; see the method's docstring. Unset ones take their defaults (written to config.json).")] = None,
    missing_token: Annotated[Optional[str], typer.Option(help="An absent modality's slot: zero (default) or learned (MedFuse's learnable token; methods that accept it).")] = None,
    modality_dropout: Annotated[Optional[float], typer.Option(help="Train-time random removal of the CXR: each batch drops a present CXR with this probability.")] = None,
    train_missing_rate: Annotated[Optional[float], typer.Option(help="CareBench's protocol: remove the CXR from this share of the training stays that have one (fixed, seeded, per label).")] = None,
    train_cohort: Annotated[Optional[str], typer.Option(help="full (every stay, natural missingness; default) or matched (train and validate on stays with a CXR). The evaluated cohort is chosen in eval-missing/eval-fair (--test-cohort).")] = None,
    split: Annotated[Optional[str], typer.Option(help="random (the fold rule; default) or temporal (prep's temporal_split: test on the stays of 2014-2016, train and validate on 2011-2013; one test set for every fold).")] = None,
    modalities: Annotated[Optional[list[str]], typer.Option("--modalities", help="Modality subset (repeatable): a non-empty comma-separated subset of ehr, cxr, static, e.g. ehr, static, cxr,static, ehr,cxr,static. ehr, static or ehr,static trains the unimodal ehr model, cxr the cxr model, cxr with another modality the chosen --fusion; static means the --static-field choice (else the whitelist's defaults), and without ehr the EHR branch carries the static fields only (no hourly variables). The incremental-addition protocol, whose runs eval-missing turns into modality Shapley values.")] = None,
    cxr_input: Annotated[Optional[str], typer.Option(help="embeddings (the prep encoder's cached CXR embeddings; default, fast) or images (the uint8 store images through that encoder's backbone, fine-tuned end to end with light augmentation; AMP on GPU).")] = None,
    cxr_weights: Annotated[Optional[Path], typer.Option(help="--cxr-input images: start the backbone from this local weights file (the prep encoder's timm model) instead of the prep encoder's weights.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="--cxr-input images: training image side (default the prep encoder's).")] = None,
    image_augment: Annotated[Optional[bool], typer.Option("--image-augment/--no-image-augment", help="--cxr-input images: random affine and brightness/contrast jitter in training (default on; never a horizontal flip).")] = None,
    static: Annotated[bool, typer.Option("--static", help="Add the static modality: the packaged whitelist's default admission-time fields (age, admission type and location, first ICU), as time-constant EHR channels.")] = False,
    static_field: Annotated[Optional[list[str]], typer.Option("--static-field", help="A static field (repeatable), e.g. gender: sensitive attributes enter only when named here; a field known only after the observation window is refused.")] = None,
    class_weights: Annotated[Optional[str], typer.Option(help="none (default) or balanced: weight each label's positives by n_neg/n_pos (each LOS class by n/(K n_c)), computed on the training rows.")] = None,
    compile_model: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the training step on a CUDA device (ignored on CPU; not part of the run id).")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help=f"Bootstrap replicates for the metrics' confidence intervals (default {CLEAN_BOOTSTRAP}).")] = None,
) -> None:
    """Train models on the prepared data (early stopping and thresholds on validation, never test).

    A run whose resolved config and data are unchanged is reused, not retrained. Clean test metrics with patient-level bootstrap CIs go to <workspace>/results/metrics.csv.
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core import pipeline

        plan = train_plan(ctx.params)
        with _util.progress_bar() as progress:
            outcome = pipeline.train_plan(plan, ws, progress=progress)
    reused = sum(r.skipped for r in outcome.runs)
    by = ("method", "modalities", "task", "fold", "seed") if plan.modalities else ("method", "task", "fold", "seed")
    by += ("evaluated_on",)  # two rows per run: all test stays, and the stays with a CXR (every method)
    summary = _tables.metric_summary(outcome.metrics, by=by)  # subset runs of one method differ in modalities
    _util.out.print(_tables.frame_table(summary, title="clean test metrics (95% patient-level bootstrap CI)"))
    _util.out.print(f"{len(outcome.runs)} run(s) in {ws.runs} ({reused} reused); metrics in {ws.metrics_csv}")


#: Options that set the plan's axes (repeatable), not TrainConfig fields.
_AXES = {"fusion": "fusions", "task": "tasks", "fold": "folds", "seed": "seeds", "modalities": "modalities",
         "static_field": "static_fields"}
#: Options named otherwise than the TrainConfig field they set.
_FIELDS = {"selection": "selection_rules", "compile_model": "compile"}
#: ``KEY=VALUE`` options merged over the config file's mapping of the same field.
_KEY_VALUES = {"fusion_param": "fusion_params", "modulator_param": "modulator_params"}


def train_plan(params: dict[str, Any]) -> TrainPlan:
    """The command's parsed options (``ctx.params``) as one :class:`TrainPlan`: the config file's values (read
    once) under every option given."""
    options = load_config_file(params["config"]) if params.get("config") else {}
    options.update(_util.given_options(TrainConfig, params, _FIELDS, skip=_AXES))
    for flag, field in _KEY_VALUES.items():
        if params.get(flag):
            options[field] = {**(options.get(field) or {}), **_key_values(params[flag], "--" + flag.replace("_", "-"))}
    return TrainPlan(options=options, **_util.given_options(TrainPlan, params, _AXES))


def _key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``flag KEY=VALUE`` pairs, values parsed as YAML scalars."""
    import yaml

    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} '{pair}': expected KEY=VALUE")
        values[key.strip()] = yaml.safe_load(raw)
    return values
