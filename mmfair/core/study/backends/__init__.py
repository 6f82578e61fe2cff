"""Execution backends of ``mmfair study run`` (one registry; a new backend is one ``_<name>.py`` module here).

A backend is a registered class built from the CLI's options (``jobs``, ``runs_per_gpu``, ``chunk_minutes``,
``options``) whose ``execute(jobs, ctx)`` runs :func:`mmfair.core.study.runner.execute_job` for every job and
returns when each has finished, failed or was lost (a lost job simply stays unfinished for the next run).
"""

import importlib
import pkgutil

from mmfair.core.registry import Registry

BACKENDS: Registry = Registry("execution backend", entry_point_group="mmfair.backends", builtins=__name__)

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BACKENDS"]
