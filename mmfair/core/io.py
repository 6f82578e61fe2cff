"""Writing outputs so that an interrupted command never leaves a file that looks complete.

Temporary files are named ``.<final name>.<pid>.<random>.tmp`` beside their target and get the mode a plain
``open()`` would give (0666 less the umask; ``mkstemp`` alone makes them 0600). A process killed with SIGKILL
cannot remove its temporary files, so :func:`remove_stale_temporaries` removes, on the next run, those whose
process is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

log = logging.getLogger(__name__)

# ".<name>.<pid>.tmp" (prep's staged outputs), ".<name>.<pid>.<random>.tmp" (atomic_path) and
# ".<name>.partial-<pid>" / ".<name>.old-<pid>" (folders staged whole, e.g. the synthetic source)
_TEMPORARY = re.compile(r"^\..+?\.(?:(\d+)(?:\.[A-Za-z0-9_]+)?\.tmp|(?:partial|old)-(\d+))$")


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not atomic, hence the /proc route first)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # what open() would have made: outputs respect the umask
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv_atomic(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return True
    return True


def remove_stale_temporaries(folder: Path, target: str | None = None) -> list[Path]:
    """Remove the temporary files and staging folders directly in ``folder`` whose writing process is gone
    (named as in the module doc); a live process's are left alone. ``target``: only those of the file of that
    name. Returns what was removed.

    Only this machine's process ids can be checked, so a folder shared by commands running on several
    machines at once could lose another machine's in-flight temporary; mmfair calls this only where one
    command writes at a time (prep's ``data/``, the synthetic source's parent) or, for one results table's
    temporaries, under the lock every writer of that table holds."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or (target is not None and not entry.name.startswith(f".{target}.")):
            continue
        pid = int(match.group(1) or match.group(2))
        if pid == os.getpid() or process_alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    if removed:
        log.info("removed %d leftover temporary file(s) of interrupted runs in %s: %s", len(removed), folder,
                 ", ".join(sorted(p.name for p in removed)))
    return removed
