"""`mmfair list`: what the registries hold."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mmfair.cli import _util

KINDS = ("fusions", "modulators", "tasks", "encoders")


def list_cmd(
    what: Annotated[str, typer.Argument(help="fusions | modulators | tasks | encoders | all")] = "all",
) -> None:
    """List the registered fusion methods (with their papers), modulators, tasks and encoders."""
    import mmfair.core.fusion  # noqa: F401  (registers the methods)
    import mmfair.core.training  # noqa: F401  (registers tasks and EHR encoders)
    from mmfair.core import registry

    if what not in KINDS + ("all",):
        _util.fail(f"unknown list '{what}'. Available: {', '.join(KINDS)}, all")
    sections = {
        "fusions": [("fusion method", registry.FUSIONS)],
        "modulators": [("modulator", registry.MODULATORS)],
        "tasks": [("task", registry.TASKS)],
        "encoders": [("EHR encoder", registry.EHR_ENCODERS)],
    }
    chosen = KINDS if what == "all" else (what,)
    for kind in chosen:
        for title, reg in sections[kind]:
            table = Table(title=f"{title}s")
            table.add_column("name", style="bold")
            table.add_column("what it is")
            table.add_column("paper")
            entries = reg.entries()
            for e in entries:
                table.add_row(e.name, e.summary, e.paper)
            if not entries:
                table.add_row("(none yet)", "", "")
            _util.out.print(table)
    if "encoders" in chosen:
        _util.out.print("CXR encoders: any timm model name (prep --cxr-encoder), e.g. resnet10t, mobilenetv3_small_100.")
