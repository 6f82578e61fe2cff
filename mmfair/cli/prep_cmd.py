"""`mmfair prep`: raw MIMIC-IV + MIMIC-CXR-JPG files (or the synthetic default) → data/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from mmfair.cli import _util
from mmfair.core.config import PrepConfig, SyntheticConfig

DEMO_IMAGE_SIZE = 128  # the synthetic demo preset stores 128-px images; real data defaults to 256 (PrepConfig)


def prep_cmd(
    ctx: typer.Context,
    mimic_root: Annotated[
        Optional[Path],
        typer.Option(help="MIMIC-IV folder holding hosp/ and icu/ (or …/mimiciv/<version>/). Omit for the synthetic source."),
    ] = None,
    cxr_root: Annotated[
        Optional[Path], typer.Option(help="MIMIC-CXR-JPG root (…/mimic-cxr-jpg/2.0.0/). Omit for an EHR-only cohort.")
    ] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML/TOML file with prep options.")] = None,
    n_stays: Annotated[Optional[int], typer.Option(help="Synthetic source: cohort stays to generate (demo: 2000).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Synthetic source: generator seed.")] = None,
    chart_volume: Annotated[Optional[str], typer.Option(help="Synthetic source: compact (only the rows prep reads; default) | mimic (MIMIC-IV v2.2's rows per stay: ~4,300 chartevents and ~1,600 labevents, mostly itemids prep filters out).")] = None,
    mimic_version: Annotated[Optional[str], typer.Option(help="auto | 2.2 | 3.0 | 3.1 (auto detects from the values).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Side of the stored square images (128 synthetic, 256 real).")] = None,
    icd10_mode: Annotated[Optional[str], typer.Option(help="extended (default) | exact ICD-10 phenotype matching.")] = None,
    variables: Annotated[Optional[str], typer.Option(help="standard (18 channels) | extended (+10 blood labs, hourly urine output) | path to a variable-map YAML.")] = None,
    cxr_encoder: Annotated[Optional[str], typer.Option(help="timm model name of the CXR encoder, or a preset for --cxr-weights: xrv-densenet121-res224-chex|nih|pc|rsna|mimic_nb|mimic_ch|all (torchxrayvision's format).")] = None,
    cxr_weights: Annotated[Optional[Path], typer.Option(help="Local weights file for the CXR encoder (no download), used as is.")] = None,
    cxr_pretraining: Annotated[Optional[str], typer.Option(help="What a timm --cxr-weights file was pretrained on, e.g. 'ImageNet' or 'MIMIC-CXR, CheXpert' (its card; MIMIC-CXR is warned about).")] = None,
    encoder_max_steps: Annotated[Optional[int], typer.Option("--encoder-steps", help="CXR encoder training steps: same seed, same weights on any machine.")] = None,
    encoder_budget: Annotated[Optional[float], typer.Option(help="Optional wall-clock cap in seconds on the CXR encoder stage (none by default); results then depend on the machine.")] = None,
    skip_encoder: Annotated[Optional[bool], typer.Option("--skip-encoder/--no-skip-encoder", help="Skip the CXR encoder stage.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Image decoding processes (0 = one per core).")] = None,
    memory_limit: Annotated[Optional[str], typer.Option(help="DuckDB memory limit, e.g. 8GB.")] = None,
) -> None:
    """Build the cohort, hourly time series, image store and CXR embeddings in <workspace>/data/.

    With no --mimic-root, a synthetic source with MIMIC's exact layout (and planted, known effects) is generated into <workspace>/source/ and prepped with the same code as real data.
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        if cxr_root is not None and mimic_root is None:
            _util.fail("--cxr-root needs --mimic-root (the synthetic source brings its own CXR tree)")
        synthetic = None
        if mimic_root is None:
            synthetic = SyntheticConfig.model_validate(
                {k: v for k, v in {"n_stays": n_stays, "seed": seed, "chart_volume": chart_volume}.items()
                 if v is not None}
            )
            if image_size is None:
                image_size = DEMO_IMAGE_SIZE
        elif n_stays is not None or seed is not None or chart_volume is not None:
            _util.fail("--n-stays, --seed and --chart-volume apply to the synthetic source only; "
                       "drop them or drop --mimic-root")
        cfg = _util.build_config(
            PrepConfig,
            config,
            mimic_root=mimic_root,
            cxr_root=cxr_root,
            mimic_version=mimic_version,
            image_size=image_size,
            icd10_mode=icd10_mode,
            variables=variables,
            cxr_encoder=cxr_encoder,
            cxr_weights=cxr_weights,
            cxr_pretraining=cxr_pretraining,
            encoder_max_steps=encoder_max_steps,
            encoder_time_budget_s=encoder_budget,
            skip_encoder=skip_encoder,
            workers=workers,
            memory_limit=memory_limit,
        )
        from mmfair.core import pipeline

        with _util.progress_bar() as progress:
            outcome = pipeline.prep(cfg, ws, synthetic=synthetic, progress=progress)
    _render(outcome, ws)


def _render(outcome, ws) -> None:
    result = outcome.prep
    summary = Table(title="prep", show_header=False)
    summary.add_row("workspace data", str(ws.data))
    if outcome.synthetic_root is not None:
        summary.add_row("source", f"synthetic, {outcome.synthetic_root}")
    summary.add_row("cohort stays", f"{result.n_stays:,}")
    share = result.n_with_cxr / result.n_stays if result.n_stays else 0.0
    summary.add_row("stays with a paired CXR", f"{result.n_with_cxr:,} ({share:.0%})")
    for stage, seconds in (result.stage_seconds or {}).items():
        summary.add_row(f"time: {stage}", f"{seconds:.1f} s")
    _util.out.print(summary)

    attrition = Table(title="cohort attrition")
    for col in result.attrition.columns:
        attrition.add_column(str(col))
    for row in result.attrition.itertuples(index=False):
        attrition.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    _util.out.print(attrition)
    from mmfair.cli._sanity import sanity_table  # the cohort beside published ranges (issue 17)

    _util.out.print(sanity_table(ws))

    enc = result.encoder
    if enc:
        table = Table(title=f"CXR encoder {enc.get('encoder_id', '')}: held-out CheXpert AUROC (non-cohort subjects)")
        table.add_column("finding")
        table.add_column("AUROC", justify="right")
        if enc.get("random_init"):
            table.add_row("(random-init fallback: too few non-cohort images)", "n/a")
        for finding, auc in (enc.get("heldout_auroc") or {}).items():
            # prep.json stores an undefined AUROC as null (None); a fresh result may still hold NaN
            table.add_row(finding, "n/a" if auc is None or auc != auc else f"{auc:.3f}")
        card = enc.get("card") or {}
        if card.get("pretraining_data"):
            table.caption = f"pretrained on: {card['pretraining_data']}"
        _util.out.print(table)
        if card.get("provenance_warning"):
            _util.out.print(f"[bold red]WARNING: {escape(card['provenance_warning'])}[/]")
