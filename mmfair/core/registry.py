"""One string-keyed registry type for every extension axis: fusions, modulators, encoders, tasks, scenarios."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from mmfair.core.errors import ConfigError

T = TypeVar("T")

_UNKNOWN = "Unknown {kind} '{name}'. Available: {available}"
_DUPLICATE = "{kind} '{name}' is already registered"


@dataclass
class Entry(Generic[T]):
    name: str
    obj: T
    summary: str = ""
    paper: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name → object, with a one-line summary and the paper each entry follows.

    ``entry_point_group`` names a packaging entry-point group whose entries are imported (once) on the
    first lookup, so third-party packages can register without mmfair importing them explicitly.
    ``builtins`` names the module that registers the built-in entries, imported (once) on the first lookup,
    so a low-level module (a config validator) can look an entry up without importing its implementation.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None, builtins: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtins = builtins
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = entry_point_group is None and builtins is None

    def register(self, name: str, *, summary: str = "", paper: str = "", **extra: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(_DUPLICATE.format(kind=self.kind, name=name))
            self._entries[name] = Entry(name=name, obj=obj, summary=summary, paper=paper, extra=extra)
            return obj

        return decorator

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        if self.builtins:
            importlib.import_module(self.builtins)
        if self.entry_point_group:
            for ep in entry_points(group=self.entry_point_group):
                ep.load()

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                _UNKNOWN.format(kind=self.kind, name=name, available=", ".join(sorted(self._entries)) or "none")
            ) from None

    def names(self) -> list[str]:
        self._load_plugins()
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        self._load_plugins()
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries


FUSIONS: Registry[Any] = Registry("fusion method", entry_point_group="mmfair.fusions")
MODULATORS: Registry[Any] = Registry("modulator")
EHR_ENCODERS: Registry[Any] = Registry("EHR encoder")
TASKS: Registry[Any] = Registry("task")
SCENARIOS: Registry[Any] = Registry("missingness scenario", builtins="mmfair.core.evaluation.scenarios")
