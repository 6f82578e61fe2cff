"""What each CLI command does, as one library call per command (the CLI only parses and renders).

These functions orchestrate the parts (synthetic source, prep, training, the evaluation core, reporting)
and return dataframes/dataclasses; they never print.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from mmfair.core.config import (
    EvalFairConfig,
    EvalMissingConfig,
    PrepConfig,
    ReportConfig,
    SyntheticConfig,
    TrainConfig,
)
from mmfair.core.errors import InputFileError
from mmfair.core.io import write_text_atomic
from mmfair.core.workspace import Workspace

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

_NO_DATA = "no prepared data in {path}: run `mmfair prep` first"
_NO_RUNS = "no finished runs in {path}: run `mmfair train` first"
_NO_RESULTS = "no results in {path}: run `mmfair train`, `mmfair eval-missing` or `mmfair eval-fair` first"


@dataclass
class PrepOutcome:
    prep: object  # mmfair.core.data.prep.PrepResult
    synthetic_root: Path | None = None


def prep(
    config: PrepConfig,
    workspace: Workspace,
    synthetic: SyntheticConfig | None = None,
    progress: Progress | None = None,
) -> PrepOutcome:
    """Prep the given MIMIC source; with none, generate the synthetic source first and prep it the same way."""
    from mmfair.core.data.prep import run_prep

    synthetic_root = None
    if config.mimic_root is None:
        from mmfair.core.data.synthetic import generate_source

        synthetic = synthetic or SyntheticConfig()
        log.info("no --mimic-root given: generating the synthetic source in %s", workspace.source)
        src = generate_source(synthetic, workspace.source, progress=progress)
        config = config.model_copy(update={"mimic_root": src.mimic_root, "cxr_root": src.cxr_root})
        synthetic_root = workspace.source
    result = run_prep(config, workspace, progress=progress)
    return PrepOutcome(prep=result, synthetic_root=synthetic_root)


def _require_data(workspace: Workspace) -> None:
    for path in (workspace.cohort_csv, workspace.features_h5):
        if not path.exists():
            raise InputFileError(_NO_DATA.format(path=workspace.data))


@dataclass
class TrainOutcome:
    runs: list = field(default_factory=list)  # list[RunResult]
    metrics: pd.DataFrame | None = None


def train(
    configs: Iterable[TrainConfig],
    workspace: Workspace,
    bootstrap: int = 200,
    progress: Progress | None = None,
) -> TrainOutcome:
    """Train (or reuse) one run per config, then write their clean test metrics to results/metrics.csv."""
    _require_data(workspace)
    from mmfair.core.evaluation import evaluate_clean, upsert_results
    from mmfair.core.training import train_run

    runs = [train_run(cfg, workspace, progress=progress) for cfg in configs]
    rows = evaluate_clean([r.run_dir for r in runs], bootstrap=bootstrap, seed=0)
    upsert_results(workspace.metrics_csv, rows)
    return TrainOutcome(runs=runs, metrics=rows)


def _finished_runs(workspace: Workspace, run_ids: Iterable[str] | None = None) -> list[Path]:
    runs = workspace.finished_runs()
    wanted = set(run_ids or [])
    if wanted:
        unknown = wanted - {p.name for p in runs}
        if unknown:
            raise InputFileError(f"no finished run named {', '.join(sorted(unknown))} in {workspace.runs}")
        runs = [p for p in runs if p.name in wanted]
    if not runs:
        raise InputFileError(_NO_RUNS.format(path=workspace.runs))
    return runs


def make_predict_fn(device: str = "auto") -> Callable:
    """``predict_fn(run_dir, split, present_override, ehr_transform=None)`` for the evaluation core,
    loading each run once (``ehr_transform``: see :func:`mmfair.core.training.runs.predict`)."""
    from mmfair.core.training import load_run, predict

    loaded: dict[Path, object] = {}

    def predict_fn(run_dir: Path, split: str, present_override: dict | None = None, ehr_transform=None) -> pd.DataFrame:
        run_dir = Path(run_dir)
        if run_dir not in loaded:
            loaded[run_dir] = load_run(run_dir, device=device)
        return predict(loaded[run_dir], split, present_override, ehr_transform=ehr_transform)

    return predict_fn


def _replace_points(path: Path, rows: pd.DataFrame) -> None:
    """Upsert ``rows`` after dropping every earlier row of the same run, test cohort and scenario point.

    A point re-evaluated is replaced as a whole, so rows that an older version keyed differently (per-group
    rows once carried the overall missing rate) or no longer writes cannot survive next to the new ones.
    """
    from mmfair.core.evaluation import upsert_results
    from mmfair.core.evaluation.tidy import read_results
    from mmfair.core.io import write_csv_atomic

    point = ["run_id", "test_cohort", "scenario", "scenario_params"]
    old = read_results(path)
    if len(old) and len(rows):
        fresh = set(map(tuple, rows[point].astype(str).drop_duplicates().to_numpy()))
        stale = [tuple(r) in fresh for r in old[point].astype(str).to_numpy()]
        if any(stale):
            write_csv_atomic(Path(path), old[[not s for s in stale]].reset_index(drop=True))
    upsert_results(path, rows)


def eval_missing(config: EvalMissingConfig, workspace: Workspace, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Score every finished run with a modality removed under one mechanism; rows → results/missing.csv.

    The robustness summaries and modality Shapley values are then recomputed into the same file.
    """
    _require_data(workspace)
    runs = _finished_runs(workspace, run_ids)
    from mmfair.core.evaluation import evaluate_missing, upsert_results
    from mmfair.core.evaluation.robustness import update_summaries
    from mmfair.core.evaluation.shapley import update_shapley

    rows = evaluate_missing(runs, config, make_predict_fn(config.device))
    _replace_points(workspace.missing_csv, rows)
    # Summaries and Shapley values depend on every curve and subset run in the workspace, not only on
    # this call's runs, so both are recomputed from the whole table.
    update_summaries(workspace.missing_csv, reference=config.reference)
    update_shapley(
        workspace.missing_csv,
        workspace.finished_runs(),
        attributes=config.shapley_attributes,
        bootstrap=config.bootstrap,
        seed=config.seed,
    )
    return rows


def eval_fair(config: EvalFairConfig, workspace: Workspace, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Subgroup metrics, fairness gaps and paired comparisons with ``config.reference`` of every finished run
    (rows → results/fairness.csv), and each run's cost rows (→ results/metrics.csv, beside the clean metrics
    that train wrote: a cost belongs to the run, not to a subgroup).

    Inference speed needs the prepared data (the model is loaded and its test split predicted): without it,
    or with ``time_inference=False``, the cost rows come from the run folder alone.
    """
    runs = _finished_runs(workspace, run_ids)
    from mmfair.core.evaluation import evaluate_fairness, upsert_results
    from mmfair.core.evaluation.comparisons import evaluate_comparisons
    from mmfair.core.evaluation.cost import evaluate_cost

    rows = evaluate_fairness(runs, config)
    if config.reference:
        rows = pd.concat([rows, evaluate_comparisons(runs, config)], ignore_index=True)
    upsert_results(workspace.fairness_csv, rows)
    has_data = workspace.cohort_csv.exists() and workspace.features_h5.exists()
    if config.time_inference and not has_data:
        log.warning("no prepared data in %s: inference speed not timed", workspace.data)
    predict_fn = make_predict_fn(config.device) if config.time_inference and has_data else None
    upsert_results(workspace.metrics_csv, evaluate_cost(runs, predict_fn))
    return rows


def _read_results(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def report_tables(config: ReportConfig, workspace: Workspace) -> dict[str, pd.DataFrame]:
    """The report's tables, built from the tidy results tables only (with the small-cell rule applied)."""
    from mmfair.core.reporting import build_tables

    metrics = _read_results(workspace.metrics_csv)
    missing = _read_results(workspace.missing_csv)
    fairness = _read_results(workspace.fairness_csv)
    if metrics is None and missing is None and fairness is None:
        raise InputFileError(_NO_RESULTS.format(path=workspace.results))
    tables = build_tables(metrics, missing, fairness, min_group_size=config.min_group_size)
    from mmfair.core.reporting.comparisons import statistics_tables

    # the statistics go right after the fairness tables they build on
    extra = statistics_tables(metrics, fairness, reference=config.reference)
    ordered: dict[str, pd.DataFrame] = {}
    for name, table in tables.items():
        ordered[name] = table
        if name == "fairness_gaps":
            ordered.update(extra)
    ordered.update({k: v for k, v in extra.items() if k not in ordered})
    return ordered


def report(config: ReportConfig, workspace: Workspace) -> tuple[dict[str, pd.DataFrame], Path | None, str | None]:
    """Render the report; markdown and csv are written to ``config.out`` (default reports/report.md|csv)."""
    from mmfair.core.reporting import render_csv, render_markdown

    tables = report_tables(config, workspace)
    if config.format == "terminal":
        return tables, None, None
    text = render_markdown(tables) if config.format == "markdown" else render_csv(tables)
    out = config.out or workspace.reports / ("report.md" if config.format == "markdown" else "report.csv")
    write_text_atomic(Path(out), text)
    return tables, Path(out), text
