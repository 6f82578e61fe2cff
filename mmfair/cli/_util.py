"""Shared CLI plumbing: the consoles, logging, errors → exit 2, config files merged with options, progress."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmfair.core.config import load_config_file
from mmfair.core.errors import MmfairError
from mmfair.core.workspace import Workspace

out = Console()
if not out.is_terminal:
    # Rich falls back to 80 columns when piped, which folds the wide comparison tables; COLUMNS still wins.
    out = Console(width=int(os.environ.get("COLUMNS", 160)))
err = Console(stderr=True)

M = TypeVar("M", bound=BaseModel)


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    root = logging.getLogger("mmfair")
    root.handlers.clear()
    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def workspace(ctx: typer.Context) -> Workspace:
    return (ctx.obj or {}).get("workspace") or Workspace.resolve()


def fail(message: str) -> None:
    # the message is text, not markup: "[nan]" or "healnet[depth=3]" would otherwise vanish as tags
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ())) or "config"
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        value = e.get("input")
        parts.append(f"{where}: {msg}" + (f" (got {value!r})" if e.get("type") != "missing" and where != "config" and not isinstance(value, dict) else ""))
    return "; ".join(parts)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's user-facing errors into one line on stderr and exit code 2 (never a traceback)."""
    try:
        yield
    except MmfairError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(_validation_message(exc))


def build_config(model: type[M], config_file: Path | None, **options: Any) -> M:
    """File values first, then every option the user actually gave (``None`` means not given)."""
    values: dict[str, Any] = load_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in options.items() if v is not None})
    return model.model_validate(values)


def given_options(model: type[BaseModel], params: dict[str, Any], renamed: dict[str, str] | None = None,
                  skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of ``model`` a command's parsed options (``ctx.params``) set: an option sets the field of its
    own name, or of ``renamed[name]``; an option not given (None, no values) sets nothing; a repeatable option's
    values become a tuple; options in ``skip`` and options that set no field (``--run``, ``--config``) are left
    to the command."""
    renamed, skip = renamed or {}, set(skip)
    options = {}
    for name, value in params.items():
        field = renamed.get(name, name)
        if name not in skip and field in model.model_fields and value not in (None, [], ()):
            options[field] = tuple(value) if isinstance(value, list) else value
    return options


def config_from_options(model: type[M], params: dict[str, Any], renamed: dict[str, str] | None = None) -> M:
    """``model`` from a command's parsed options: the ``--config`` file (read once) under every option given
    (:func:`given_options`)."""
    return build_config(model, params.get("config"), **given_options(model, params, renamed))


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Any]:
    """A ``(description, done, total)`` callback drawing Rich bars on stderr; silent when stderr is no terminal."""
    if not enabled or not err.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        yield update
