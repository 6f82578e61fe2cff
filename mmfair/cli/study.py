"""`mmfair study run|status`: a whole benchmark grid (tuning on validation, final runs, evaluation) in one
resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mmfair.cli import _tables, _util
from mmfair.core.errors import ConfigError


def _help() -> str:
    from mmfair.core.study import preset_summaries

    lines = "\n".join(f"- [bold]{name}[/]: {text}" for name, text in preset_summaries().items())
    return ("Run a whole benchmark study: equal-budget tuning per method, task and outer fold on that fold's "
            "validation only, then the chosen configuration × every seed, then eval-missing and eval-fair on the "
            "final runs. Resumable: run it again after a kill and only unfinished work runs.\n\n"
            f"Presets (--preset NAME; `examples/study_<name>.yaml` are commented copies):\n\n{lines}")


study_app = typer.Typer(help=_help(), no_args_is_help=True, rich_markup_mode="rich")

StudyFile = Annotated[Optional[Path], typer.Argument(help="Study file (YAML); or use --preset.")]
Preset = Annotated[Optional[str], typer.Option("--preset", "-p", help="A packaged study (see `mmfair study --help`).")]


def _spec(study_file: Path | None, preset: str | None):
    from mmfair.core.study import load_study

    return load_study(study_file, preset)


def _slurm_options(pairs: list[str] | None) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm '{pair}': expected KEY=VALUE, e.g. slurm_partition=gpu")
        out[key.strip()] = yaml.safe_load(raw)
    return out


@study_app.command("run")
def run_cmd(
    ctx: typer.Context,
    study_file: StudyFile = None,
    preset: Preset = None,
    backend: Annotated[str, typer.Option(help="Where jobs run: local (a process pool) or slurm (submitit arrays).")] = "local",
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel CPU processes (local), or CPUs and workers per array task (slurm).")] = 1,
    runs_per_gpu: Annotated[int, typer.Option(help="Jobs sharing each visible GPU at once.")] = 1,
    chunk_minutes: Annotated[float, typer.Option(help="slurm: pack jobs into array tasks of about this many minutes.")] = 60.0,
    slurm: Annotated[Optional[list[str]], typer.Option("--slurm", help="slurm: a submitit option KEY=VALUE (repeatable), e.g. slurm_partition=gpu, gpus_per_node=1, cluster=local.")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run jobs recorded as failed again.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Run (or resume) a study; its results go to results/*.csv like any other run's (with `stores:` in the study
    file, to each store's own workspace, <workspace>/stores/<name>/)."""
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core.study.backends import BACKENDS
        from mmfair.core.study.runner import run_study

        spec = _spec(study_file, preset)
        chosen = BACKENDS.get(backend).from_options(jobs=jobs, runs_per_gpu=runs_per_gpu, chunk_minutes=chunk_minutes,
                                                    device=device, options=_slurm_options(slurm))
        outcome = run_study(spec, ws, chosen, retry_failed=retry_failed, device=device)
    for what, error in outcome.failures:
        _util.err.print(f"failed: {what}: {error}", markup=False, highlight=False)
    _util.out.print(f"study {spec.name}: {outcome.done} job(s) done, {outcome.failed} failed, {outcome.unfinished} unfinished"
                    + ("; evaluated" if outcome.evaluated else ""))
    for name, folder in outcome.stores.items():
        _util.out.print(f"store {name}: results in {folder / 'results'} (`mmfair report --workspace {folder}`)",
                        markup=False, highlight=False)
    if outcome.unfinished:
        _util.out.print("run `mmfair study run` again to finish the unfinished jobs")
        raise typer.Exit(code=1)


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(round(width * done / total)) if total else width
    return "█" * filled + "░" * (width - filled)


@study_app.command("status")
def status_cmd(
    ctx: typer.Context,
    study_file: StudyFile = None,
    preset: Preset = None,
) -> None:
    """Jobs done / running / failed / pending per method (and per store), a progress bar with ETA, and the tuning
    choices."""
    ws = _util.workspace(ctx)
    with _util.user_errors():
        from mmfair.core.study.runner import study_status

        spec = _spec(study_file, preset)
        status = study_status(spec, ws)
    if len(status["table"]):
        _util.out.print(_tables.frame_table(status["table"], title=f"study {spec.name} ({status['folder']})"))
    eta = status["eta_seconds"]
    eta_text = "" if eta is None else f"  ETA {int(eta // 3600)}h{int(eta % 3600 // 60):02d}m{int(eta % 60):02d}s"
    _util.out.print(f"{_bar(status['done'], status['total'])} {status['done']}/{status['total']} jobs{eta_text}")
    if len(status["chosen"]):
        _util.out.print(_tables.frame_table(status["chosen"], title="tuning: budget and chosen values (validation only)"))
