"""One string-keyed registry type for every extension axis: fusions, modulators, encoders, tasks, scenarios."""

from __future__ import annotations

import importlib
import sys
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

    _all: list["Registry"] = []

    def __init__(self, kind: str, entry_point_group: str | None = None, builtins: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtins = builtins
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = entry_point_group is None and builtins is None
        Registry._all.append(self)

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
        if self.builtins:
            importlib.import_module(self.builtins)
        if _builtins_initializing():
            return  # a lookup made while mmfair registers its own entries: plugins load on a later lookup
        self._plugins_loaded = True
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


def _builtins_initializing() -> bool:
    """True while a module that registers built-in entries is still being imported. A plugin imported then
    would import ``mmfair.plugins`` from a half-initialised package (a circular import)."""
    for reg in Registry._all:
        module = sys.modules.get(reg.builtins) if reg.builtins else None
        if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False):
            return True
    return False


# Every axis is open to installed packages the same way: an entry point in the axis's group
# (``[project.entry-points."mmfair.<axis>"]``) names a module that registers its entries when imported.
FUSIONS: Registry[Any] = Registry("fusion method", entry_point_group="mmfair.fusions", builtins="mmfair.core.fusion")
MODULATORS: Registry[Any] = Registry("modulator", entry_point_group="mmfair.modulators",
                                     builtins="mmfair.core.modulators")
EHR_ENCODERS: Registry[Any] = Registry("EHR encoder", entry_point_group="mmfair.ehr_encoders",
                                       builtins="mmfair.core.encoders.ehr")
TASKS: Registry[Any] = Registry("task", entry_point_group="mmfair.tasks", builtins="mmfair.core.training.tasks")
SCENARIOS: Registry[Any] = Registry("missingness scenario", entry_point_group="mmfair.scenarios",
                                    builtins="mmfair.core.evaluation.scenarios")
