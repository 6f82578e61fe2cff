"""Result provenance: which code, data, libraries and machine produced a run, and whether results mix them.

Every run folder's ``config.json`` holds a ``provenance`` record (DESIGN §3.3), from :func:`collect`:

* ``mmfair_version``, ``git_commit`` and ``git_dirty`` (when mmfair runs from a git checkout; ``null`` when
  installed from a wheel), ``protocol`` (:data:`~mmfair.core.protocol.PROTOCOL_VERSION`);
* ``data_fingerprint`` (the store's), ``mimic_version`` and ``source`` (from ``data/prep.json``);
* ``python``, ``torch``, ``cuda`` (``torch.version.cuda``; ``null`` on a CPU build), ``cudnn``, the tree
  library where one was used, ``device`` (``cpu``/``cuda:N``) and ``device_name`` (the GPU's name, or the
  CPU's), ``platform``, ``created_utc``.

Every tidy results row carries ``protocol`` and ``mmfair_version`` (results schema 2). :func:`provenance_summary`
turns both into one small table for the report, with a flag when the results (or the runs behind them) mix
mmfair versions, protocols, commits, data or libraries — numbers that should not share a table unnoticed.
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

import mmfair
from mmfair.core.protocol import PROTOCOL_VERSION
from mmfair.core.workspace import Workspace

#: Run fields that must agree across the runs of one report (the rest — device, time — may differ).
RUN_KEYS = ("mmfair_version", "git_commit", "protocol", "data_fingerprint", "mimic_version", "torch", "cuda")
RESULT_FILES = ("metrics.csv", "missing.csv", "fairness.csv", "external.csv")


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout mmfair is imported from; ``(None, None)`` outside one (read-only git)."""
    root = Path(mmfair.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def _device_name(device: Any) -> tuple[str, str]:
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return str(dev), torch.cuda.get_device_name(dev)
    return str(dev), platform.processor() or platform.machine() or "cpu"


def _prep_info(ws: Workspace | None) -> dict[str, Any]:
    path = ws.data / "prep.json" if ws is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def collect(ws: Workspace | None = None, data_fingerprint: str | None = None, device: Any = None,
            library: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The provenance record of a run trained now in ``ws`` on the store ``data_fingerprint`` on ``device``."""
    import torch

    commit, dirty = git_state()
    prep = _prep_info(ws)
    dev, name = _device_name(device)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "mmfair_version": mmfair.__version__, "git_commit": commit, "git_dirty": dirty, "protocol": PROTOCOL_VERSION,
        "data_fingerprint": data_fingerprint or prep.get("fingerprint"), "mimic_version": prep.get("mimic_version"),
        "source": prep.get("source"), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": cudnn, "library": library, "device": dev, "device_name": name,
        "platform": f"{platform.system()} {platform.machine()}", "created_utc": datetime.now(timezone.utc).isoformat(
            timespec="seconds"),
    }  # fmt: skip


def read_provenance(run_dir: Path) -> dict[str, Any] | None:
    """A run's provenance record (``config.json`` ``provenance``); ``None`` for a run written before mmfair
    recorded it."""
    path = Path(run_dir) / "config.json"
    try:
        record = json.loads(path.read_text()).get("provenance") if path.is_file() else None
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return record if isinstance(record, dict) else None


@dataclass
class ProvenanceSummary:
    """``table``: one row per results file × protocol × mmfair version (rows, runs), then one row per distinct
    run provenance (runs); ``mixed``: whether any of :data:`RUN_KEYS` or the results' protocol/version differ;
    ``warnings``: one line per mixed field, for the report."""

    table: pd.DataFrame
    mixed: bool
    warnings: list[str] = field(default_factory=list)


def _results_part(ws: Workspace) -> pd.DataFrame:
    from mmfair.core.evaluation.tidy import read_results

    parts = []
    for name in RESULT_FILES:
        path = ws.results / name
        if not path.is_file():
            continue
        df = read_results(path)
        if len(df) == 0:
            continue
        grouped = df.groupby(["protocol", "mmfair_version"], dropna=False)
        for (protocol, version), g in grouped:
            parts.append({"what": f"results/{name}", "protocol": "" if pd.isna(protocol) else str(protocol),
                          "mmfair_version": version or "(unrecorded)", "rows": len(g), "runs": g["run_id"].nunique()})
    return pd.DataFrame(parts)


def _runs_part(ws: Workspace) -> pd.DataFrame:
    records = []
    for run_dir in ws.finished_runs():
        rec = read_provenance(run_dir) or {}
        records.append({k: "(unrecorded)" if rec.get(k) is None else str(rec.get(k)) for k in RUN_KEYS}
                       | {"device_name": str(rec.get("device_name") or "(unrecorded)")})
    if not records:
        return pd.DataFrame()
    df = pd.DataFrame(records)
    cols = [*RUN_KEYS, "device_name"]
    out = df.groupby(cols, dropna=False).size().reset_index(name="runs")
    out.insert(0, "what", "runs/")
    return out


def provenance_summary(workspace: Workspace) -> ProvenanceSummary:
    """One small table of what produced the workspace's results and runs, and a flag when they mix versions,
    protocols, commits, data or libraries (see :class:`ProvenanceSummary`)."""
    results, runs = _results_part(workspace), _runs_part(workspace)
    warnings = []
    if len(results):
        for col in ("protocol", "mmfair_version"):
            values = sorted(set(results[col]))
            if len(values) > 1:
                warnings.append(f"results mix {col} values {', '.join(values)}: re-evaluate with one mmfair before "
                                "comparing rows")  # fmt: skip
    if len(runs):
        for col in RUN_KEYS:
            values = sorted(set(runs[col]) - {"(unrecorded)"})
            if len(values) > 1:
                warnings.append(f"runs mix {col} values {', '.join(values)}")
    table = pd.concat([results, runs], ignore_index=True).fillna("") if len(results) or len(runs) else pd.DataFrame()
    return ProvenanceSummary(table=table, mixed=bool(warnings), warnings=warnings)


__all__ = ["ProvenanceSummary", "collect", "git_state", "provenance_summary", "read_provenance"]
