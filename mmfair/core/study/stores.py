"""A study's prepared stores: the prep-level axes (observation window, variable set, CXR encoder) a study varies.

A *store* is a prepared ``data/`` made with the main workspace's prep settings (``data/prep.json`` → ``config``,
which holds the source it was made from: the MIMIC roots, or the synthetic source generated under
``<workspace>/source/``) plus the store's overrides from the study file's ``stores:`` mapping. Each store is a
workspace of its own, ``<workspace>/stores/<name>/`` (``data/``, ``runs/``, ``results/``, ``studies/``), and
the study's whole grid (tuning, final runs, eval-missing, eval-fair) runs once in each, so job keys, job
records, resume, ``--retry-failed`` and ``mmfair study status`` work per store.

The trade-off: there is no cross-store results table. The results schema has no store column (and this round
allows no schema bump), so results of different stores never meet in one table; ``mmfair report --workspace
<workspace>/stores/<name>`` reports one store. A store's name is bound to its settings: a study that asks an
existing store for other settings is refused (rename the store, or delete its folder).

Prep runs in the ``study run`` process (as ``mmfair prep`` would), under a file lock per store, so two
``study run`` processes starting at once prepare a store once; prep itself reuses a finished store. Each
store's prep is recorded in the main study folder as job ``prep-<name>`` (done | failed with its one-line
error); a store whose prep failed is skipped like a failed run (``--retry-failed`` tries it again).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from mmfair.core.config import PrepConfig
from mmfair.core.errors import ConfigError, InputFileError
from mmfair.core.study.spec import StudySpec
from mmfair.core.study.state import StudyDir
from mmfair.core.workspace import Workspace

log = logging.getLogger(__name__)

#: Prep settings that change how prep runs on this machine, not what it makes (left out of the settings check).
_MACHINE_SETTINGS = frozenset({"workers", "memory_limit", "duckdb_threads", "mimic_root", "cxr_root"})
_NO_PREP_JSON = ("study stores are prepared with the main workspace's prep settings, and {path} is missing: "
                 "run `mmfair prep` on {workspace} first")


def store_workspace(ws: Workspace, name: str) -> Workspace:
    return Workspace(ws.root / "stores" / name)


def prep_job_key(name: str) -> str:
    return f"prep-{name}"


def main_prep_config(ws: Workspace) -> PrepConfig:
    """The prep settings the main workspace's store was made with (its source included)."""
    path = ws.data / "prep.json"
    try:
        recorded = json.loads(path.read_text())["config"]
    except FileNotFoundError:
        raise InputFileError(_NO_PREP_JSON.format(path=path, workspace=ws.root)) from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputFileError(f"{path}: unreadable (no 'config'): run `mmfair prep` on {ws.root} again") from None
    return PrepConfig.model_validate(recorded)


def store_config(base: PrepConfig, name: str, overrides: dict[str, Any]) -> PrepConfig:
    """``base`` with the store's overrides, validated together (a one-line ConfigError naming the store)."""
    from pydantic import ValidationError

    try:
        return PrepConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        reason = "; ".join(e.get("msg", "invalid").removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"store '{name}': {reason}") from None


def _check_settings(store: Workspace, name: str, config: PrepConfig) -> None:
    """Refuse to remake an existing store with other settings (its runs and results were made from the old ones)."""
    path = store.data / "prep.json"
    if not path.exists():
        return
    recorded = json.loads(path.read_text()).get("config") or {}
    wanted = config.model_dump(mode="json")
    changed = sorted(k for k in wanted if k not in _MACHINE_SETTINGS and recorded.get(k, wanted[k]) != wanted[k])
    if changed:
        diffs = ", ".join(f"{k}={recorded[k]!r} (asked {wanted[k]!r})" for k in changed)
        raise ConfigError(f"store '{name}' in {store.root} was prepared with {diffs}: give the store another name, "
                          "or delete its folder")


def prepare_store(spec: StudySpec, ws: Workspace, name: str, retry_failed: bool = False) -> bool:
    """Prepare (or reuse) one store under its file lock; record the outcome in the main study folder as job
    ``prep-<name>``. Returns whether the store is ready; a failure is recorded with its one-line error."""
    from filelock import FileLock

    sd = StudyDir.of(ws, spec.name)
    key = prep_job_key(name)
    previous = (sd.read(key) or {}).get("state")
    if previous == "failed" and not retry_failed:
        return False
    store = store_workspace(ws, name)
    store.root.mkdir(parents=True, exist_ok=True)
    fields = {"kind": "prep", "method": "(prep)", "store": name}
    started = time.time()
    with FileLock(str(store.root / "prep.lock")):
        sd.write(key, state="running", **fields)
        try:
            extra = _prepare_locked(spec, ws, store, name)
        except Exception as exc:  # noqa: BLE001 - recorded, and the other stores go on
            from mmfair.core.study.tuning import one_line

            log.warning("store %s: prep failed: %s", name, one_line(exc))
            sd.write(key, state="failed", error=one_line(exc), seconds=time.time() - started, **fields)
            return False
    sd.write(key, state="done", seconds=time.time() - started, **fields, **extra)
    return True


def _prepare_locked(spec: StudySpec, ws: Workspace, store: Workspace, name: str) -> dict[str, Any]:
    from mmfair.core import pipeline

    config = store_config(main_prep_config(ws), name, spec.stores[name])
    _check_settings(store, name, config)
    log.info("store %s: preparing %s (reused when already prepared with these settings)", name, store.data)
    result = pipeline.prep(config, store).prep
    return {"fingerprint": result.fingerprint, "reused": result.reused}


def store_folders(spec: StudySpec, ws: Workspace) -> dict[str, Path]:
    """Store name → its workspace folder (``mmfair report --workspace`` reads one)."""
    return {name: store_workspace(ws, name).root for name in spec.stores}
