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
    CLEAN_BOOTSTRAP,
    EvalFairConfig,
    EvalMissingConfig,
    PrepConfig,
    ReportConfig,
    SyntheticConfig,
    TrainConfig,
    TrainPlan,
)
from mmfair.core.errors import InputFileError, MmfairError
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
        from mmfair.core.synthetic import generate_source

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
    bootstrap: int = CLEAN_BOOTSTRAP,
    progress: Progress | None = None,
) -> TrainOutcome:
    """Train (or reuse) one run per config, then write their clean test metrics to results/metrics.csv. Each
    method is resolved once (:func:`~mmfair.core.training.methods.resolve_methods`) and every config checked
    before any run folder exists."""
    from mmfair.core.evaluation import evaluate_clean, upsert_results
    from mmfair.core.training import train_run
    from mmfair.core.training.methods import resolve_methods
    from mmfair.core.training.runs import check_names

    configs = list(configs)
    for cfg in configs:
        check_names(cfg)
    methods = resolve_methods(configs)
    _require_data(workspace)
    runs = [train_run(cfg, workspace, progress=progress, method=m) for cfg, m in zip(configs, methods)]
    rows = evaluate_clean([r.run_dir for r in runs], bootstrap=bootstrap, seed=0)
    upsert_results(workspace.metrics_csv, rows)
    return TrainOutcome(runs=runs, metrics=rows)


def train_plan(plan: TrainPlan, workspace: Workspace, progress: Progress | None = None) -> TrainOutcome:
    """``mmfair train``: every run of ``plan`` (:func:`~mmfair.core.training.plan.train_configs`) through
    :func:`train`, with the plan's bootstrap."""
    from mmfair.core.training.plan import train_configs

    return train(train_configs(plan), workspace, bootstrap=plan.bootstrap, progress=progress)


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
    from mmfair.core.evaluation.tidy import merge_rows, rewrite_results
    from mmfair.core.protocol import PROTOCOL_VERSION

    point = ["run_id", "test_cohort", "scenario", "scenario_params"]

    def without_replaced_points(old: pd.DataFrame) -> pd.DataFrame:
        if not (len(old) and len(rows)):
            return old
        fresh = set(map(tuple, rows[point].astype(str).drop_duplicates().to_numpy()))
        stale = [tuple(r) in fresh for r in old[point].astype(str).to_numpy()]
        # rows of an older protocol for a re-evaluated run and scenario are keyed differently (an MCAR row of
        # protocol 1 said test_cohort=full and had no realised count): they go too, never left beside the new
        redone = set(map(tuple, rows[["run_id", "scenario"]].astype(str).drop_duplicates().to_numpy()))
        older = pd.to_numeric(old["protocol"], errors="coerce").fillna(0).to_numpy() < PROTOCOL_VERSION
        stale = [s or (o and tuple(r) in redone)
                 for s, o, r in zip(stale, older, old[["run_id", "scenario"]].astype(str).to_numpy())]  # fmt: skip
        return old[[not s for s in stale]].reset_index(drop=True)

    rewrite_results(path, lambda old: merge_rows(without_replaced_points(old), rows))


#: ``DataFrame.attrs`` key of the runs an evaluation command could not evaluate: ``[(run_id, reason), ...]``.
NOT_EVALUATED = "not_evaluated"


def each_run(runs: list[Path], evaluate: Callable[[list[Path]], pd.DataFrame], what: str) -> pd.DataFrame:
    """``evaluate`` applied to each run on its own (issue 16): a run that cannot be evaluated (a user-facing
    error such as one class in its validation fold) is warned about and listed in ``attrs[NOT_EVALUATED]``
    with its reason, and the others are still scored. Raises ``InputFileError`` only when no run could be."""
    frames, failed = [], []
    for run in runs:
        try:
            frames.append(evaluate([run]))
        except MmfairError as exc:
            failed.append((Path(run).name, str(exc)))
            log.warning("%s: run %s not evaluated: %s", what, Path(run).name, exc)
    if not frames:
        raise InputFileError(f"{what}: no run could be evaluated; " + "; ".join(f"{r}: {m}" for r, m in failed))
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    rows.attrs[NOT_EVALUATED] = failed
    return rows


def not_evaluated_lines(rows: pd.DataFrame) -> list[str]:
    """Warning lines naming each run an evaluation command skipped and why (empty when none was)."""
    failed = rows.attrs.get(NOT_EVALUATED, [])
    head = [f"warning: {len(failed)} run(s) not evaluated; the others were scored:"] if failed else []
    return head + [f"  {run}: {reason}" for run, reason in failed]


def eval_missing(config: EvalMissingConfig, workspace: Workspace, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Score every finished run with a modality removed under one mechanism; rows → results/missing.csv.

    Each run is evaluated on its own (:func:`each_run`). The robustness summaries (r*'s comparator chosen
    on the runs' validation AUROC) and modality Shapley values are then recomputed into the same file.
    """
    _require_data(workspace)
    runs = _finished_runs(workspace, run_ids)
    from mmfair.core.evaluation import evaluate_missing
    from mmfair.core.evaluation.robustness_summary import update_summaries, validation_scores
    from mmfair.core.evaluation.shapley import update_shapley

    predict_fn = make_predict_fn(config.device)
    rows = each_run(runs, lambda r: evaluate_missing(r, config, predict_fn), "eval-missing")
    failed = rows.attrs.get(NOT_EVALUATED, [])
    _replace_points(workspace.missing_csv, rows)
    rows.attrs[NOT_EVALUATED] = failed
    # Summaries and Shapley values depend on every curve and subset run in the workspace, not only on
    # this call's runs, so both are recomputed from the whole table.
    update_summaries(workspace.missing_csv, reference=config.reference,
                     validation=validation_scores(workspace.finished_runs()))
    update_shapley(
        workspace.missing_csv,
        workspace.finished_runs(),
        attributes=config.shapley_attributes,
        bootstrap=config.bootstrap,
        seed=config.seed,
        min_group_size=config.min_group_size,
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
    from mmfair.core.evaluation.reference_comparisons import evaluate_comparisons
    from mmfair.core.evaluation.cost import evaluate_cost

    from mmfair.core.training.runs import require_current

    rows = each_run(runs, lambda r: evaluate_fairness(require_current(r, workspace), config), "eval-fair")
    failed = rows.attrs.get(NOT_EVALUATED, [])
    if config.reference:  # comparisons of the runs that could be evaluated, each pair on its own
        good = [r for r in runs if r.name not in {name for name, _ in failed}]
        rows = pd.concat([rows, evaluate_comparisons(good, config)], ignore_index=True)
    if config.probe:  # demographic-encoding probe rows (issue 17), beside the gaps
        from mmfair.core.evaluation.probe import evaluate_probes

        rows = pd.concat([rows, evaluate_probes(runs, config)], ignore_index=True)
    rows.attrs[NOT_EVALUATED] = failed
    upsert_results(workspace.fairness_csv, rows)
    has_data = workspace.cohort_csv.exists() and workspace.features_h5.exists()
    if config.time_inference and not has_data:
        log.warning("no prepared data in %s: inference speed not timed", workspace.data)
    predict_fn = make_predict_fn(config.device) if config.time_inference and has_data else None
    evaluated = [r for r in runs if r.name not in {name for name, _ in failed}]  # a stale run is not timed
    upsert_results(workspace.metrics_csv, evaluate_cost(evaluated, predict_fn))
    if config.patient_weighting:  # beside train's stay-weighted clean rows, on the same paired resamples
        from mmfair.core.evaluation.weighting import evaluate_clean_patient

        upsert_results(workspace.metrics_csv, evaluate_clean_patient(evaluated, bootstrap=config.bootstrap))
    return rows


def _read_results(path: Path) -> pd.DataFrame | None:
    """A results table read through the schema checks of :func:`~mmfair.core.evaluation.tidy.read_results`
    (None: no such file)."""
    from mmfair.core.evaluation.tidy import read_results

    return read_results(path) if path.exists() else None


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
    """Render the report; markdown, csv, html and latex are written to ``config.out`` (default
    reports/report.md|csv|html|tex). html and latex are built from the tables, the prep aggregates in data/ and
    figures (:mod:`mmfair.core.reporting.html`); with ``config.figures`` every figure is also written to
    ``figures/`` beside the report (.png and .pdf). An output that cannot be written is a one-line user error."""
    from mmfair.core.reporting import render_csv, render_markdown

    tables = report_tables(config, workspace)
    if config.format == "terminal":
        return tables, None, None
    out = Path(config.out or workspace.reports / _REPORT_FILES[config.format])
    sections = None
    if config.format in ("html", "latex"):
        from mmfair.core.reporting.html import build_sections, render_html
        from mmfair.core.reporting.inputs import load_inputs
        from mmfair.core.reporting.latex import render_latex

        sections = build_sections(load_inputs(workspace, config.min_group_size), tables, config.min_group_size)
        text = render_html(sections) if config.format == "html" else render_latex(sections)
    else:
        text = render_markdown(tables) if config.format == "markdown" else render_csv(tables)
    try:
        write_text_atomic(out, text)
        if sections is not None and config.figures:
            from mmfair.core.reporting.html import write_figures

            write_figures(sections, out.parent / "figures")
    except OSError as exc:
        raise MmfairError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return tables, out, text


_REPORT_FILES = {"markdown": "report.md", "csv": "report.csv", "html": "report.html", "latex": "report.tex"}
