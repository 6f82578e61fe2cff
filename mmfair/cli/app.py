"""The `mmfair` command: a thin layer that parses options and calls one function of mmfair.core.pipeline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from typing import Annotated, Optional  # noqa: E402

import typer  # noqa: E402

from mmfair import __version__  # noqa: E402
from mmfair.cli import _util  # noqa: E402
from mmfair.core.workspace import WORKSPACE_ENV, Workspace  # noqa: E402

app = typer.Typer(
    name="mmfair",
    help=(
        "Benchmark fusion of ICU time series (EHR) with chest X-rays (CXR): when fusion helps, how it "
        "degrades when a modality is missing, and whether it is fair across demographic groups.\n\n"
        "Typical flow: prep → train → eval-missing → eval-fair → report. With no data flags, prep "
        "generates a synthetic MIMIC-shaped source, so the whole flow runs on any machine."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        _util.out.print(f"mmfair {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    workspace: Annotated[
        Optional[Path],
        typer.Option("--workspace", "-w", envvar=WORKSPACE_ENV, help="Workspace folder (default ./mmfair-workspace)."),
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _util.setup_logging(-1 if quiet else verbose)
    ctx.obj = {"workspace": Workspace.resolve(workspace)}


from mmfair.cli import eval_fair, eval_missing, list_cmd, prep_cmd, report, train  # noqa: E402
from mmfair.cli._help import fold_option_names, show_config_defaults  # noqa: E402
from mmfair.core import config as _config  # noqa: E402

fold_option_names()
app.command("prep")(show_config_defaults(_config.SyntheticConfig, _config.PrepConfig)(prep_cmd.prep_cmd))
app.command("train")(show_config_defaults(_config.TrainConfig)(train.train_cmd))
app.command("eval-missing")(show_config_defaults(_config.EvalMissingConfig)(eval_missing.eval_missing_cmd))
app.command("eval-fair")(show_config_defaults(_config.EvalFairConfig)(eval_fair.eval_fair_cmd))
app.command("report")(show_config_defaults(_config.ReportConfig)(report.report_cmd))
app.command("list")(list_cmd.list_cmd)

from mmfair.cli import score_cmd  # noqa: E402

app.command("score")(score_cmd.score_cmd)

from mmfair.cli.study import study_app  # noqa: E402

app.add_typer(study_app, name="study")


def main() -> None:
    app(prog_name="mmfair")
