"""``--help`` as a user at an 80-column terminal needs it: every default shown, no option name cut short.

* The commands pass ``None`` for an option the user did not give, so the frozen config models keep every
  default (one place for them) — and typer has no default to show. :func:`show_config_defaults` appends
  ``[default: X]`` to each such option's help, X read from the config model field of the same name (options
  whose help already speaks of a default are left as written).
* Rich's option table shrinks every column to fit the terminal and ends a cut cell with "…"; at 80 columns
  that cut long option names (``--train-missing-r…``). :func:`fold_option_names` makes name cells fold onto
  a second line instead, so a name is never lost.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, TypeVar

import typer.rich_utils
from pydantic import BaseModel
from rich.markup import escape
from rich.text import Text
from typer.models import OptionInfo

F = TypeVar("F", bound=Callable[..., Any])


def _default_text(value: Any) -> str | None:
    if value is None or (isinstance(value, (tuple, list, dict, str)) and not value):
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value)
    return str(value)


def show_config_defaults(*models: type[BaseModel]) -> Callable[[F], F]:
    """Decorator for a command: options without a CLI default get the default of the first of ``models``
    that has a field of the option's name, appended to their help as ``[default: X]``."""

    def wrap(command: F) -> F:
        hints = typing.get_type_hints(command, include_extras=True)  # the Annotated metadata, evaluated once
        parameters = inspect.signature(command).parameters
        for name, hint in hints.items():
            info = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, OptionInfo)), None)
            field = next((m.model_fields[name] for m in models if name in m.model_fields), None)
            given = parameters[name].default if name in parameters else None
            if info is None or field is None or given is not None or not info.help:
                continue
            text = _default_text(field.get_default(call_default_factory=True))
            if text is not None and "default" not in info.help.lower():
                info.help = f"{info.help} {escape(f'[default: {text}]')}"  # the help is rich markup
        command.__annotations__ = hints  # typer reads these objects, with the help texts just set
        return command

    return wrap


class _Folding:
    """Mixin for rich highlighters: the highlighted option name folds onto the next line rather than being cut."""

    def highlight(self, text: Text) -> None:
        super().highlight(text)  # type: ignore[misc]
        text.overflow = "fold"


def fold_option_names() -> None:
    """Make typer's help table fold option names (``typer>=0.29,<0.30``: module-level highlighters)."""
    for attr in ("highlighter", "negative_highlighter"):
        current = getattr(typer.rich_utils, attr, None)
        if current is None or isinstance(current, _Folding):
            continue
        folding = type(f"Folding{type(current).__name__}", (_Folding, type(current)), {})
        setattr(typer.rich_utils, attr, folding())
