"""`mmfair score PREDICTIONS.csv`: another tool's predictions, scored with mmfair's evaluation core."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmfair.cli import _util
from mmfair.core.config import BASELINE_METHOD


def score_cmd(
    ctx: typer.Context,
    predictions: Annotated[Path, typer.Argument(help="CSV with stay_id (or subject_id), split (val/test), label(s) and probabilities; see below.")],
    name: Annotated[Optional[str], typer.Option("--name", help="The tool's name (default tool); rows get method external:<name>.")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="mortality (default), mortality_icu, phenotype or los.")] = None,
    modalities: Annotated[Optional[str], typer.Option(help="What the tool used, for the tidy modalities column, e.g. ehr,cxr.")] = None,
    attr: Annotated[Optional[list[str]], typer.Option("--attr", "-a", help="Sensitive attribute (repeatable), as in eval-fair.")] = None,
    threshold: Annotated[Optional[str], typer.Option(help="Operating point chosen on the val rows: val-youden (default), val-sens-0.8, val-spec-0.8, val-prevalence, 0.5 or a number.")] = None,
    recalibrate: Annotated[Optional[str], typer.Option(help="none (default), platt or isotonic, fitted on the val rows.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Bootstrap seed (0 as eval-fair: paired with mmfair's runs).")] = None,
    min_group_size: Annotated[Optional[int], typer.Option(help="Small-cell minimum; gaps leave out groups below it.")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="Bootstrap replicates for confidence intervals.")] = None,
    test_cohort: Annotated[Optional[str], typer.Option("--test-cohort", help="full (default) or matched (test stays with a CXR).")] = None,
    reference: Annotated[Optional[str], typer.Option(help=f"mmfair method to compare with on the same test stays (default {BASELINE_METHOD}; 'none': no comparisons).")] = None,
    permutations: Annotated[Optional[int], typer.Option(help="Permutations of the paired tests.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML/TOML file with these options.")] = None,
) -> None:
    """Score predictions made by any other tool with mmfair's metrics, patient-level bootstrap, validation
    thresholds and fairness gaps.

    The CSV has one row per stay: stay_id (or subject_id when each has one stay in the cohort), split (val
    or test; val rows are required, thresholds are chosen on them, never on test), and by task label+score
    (binary; 'probability' also accepted), label_<slug>+score_<slug> (phenotype) or label+score_0..score_6
    (los). Probabilities in [0, 1]; an empty score means the tool cannot score that stay. Group columns
    and present_cxr are optional (joined from data/cohort.csv otherwise). Refused with exit 2: missing
    columns, scores outside [0, 1] or logits, duplicate stays, stays not in the cohort.

    When the test stays are exactly one cohort fold (or its stays with a CXR) and the labels match the
    cohort's, rows go to results/metrics.csv and fairness.csv beside mmfair's runs, with paired
    comparisons against --reference runs that score the same stays; otherwise to results/external.csv only.
    """
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core.evaluation.score import ScoreConfig, describe, score_predictions

        listed = tuple(m.strip() for m in modalities.split(",") if m.strip()) if modalities else None
        cfg = _util.config_from_options(ScoreConfig, {**ctx.params, "modalities": listed},
                                        {"attr": "attributes", "threshold": "threshold_rule"})
        outcome = score_predictions(predictions, ws, cfg)
    from mmfair.cli._tables import frame_table, metric_summary

    summary = metric_summary(outcome.metrics, by=("method", "task", "fold", "evaluated_on"))
    _util.out.print(frame_table(summary, f"{cfg.name}: test metrics"))
    _util.out.print(describe(outcome))
