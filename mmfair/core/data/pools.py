"""Worker process pools that die with the process that made them.

A ``ProcessPoolExecutor`` worker waits on its task pipe; forked, it holds that pipe's write end too, so a
parent killed with SIGKILL (no ``finally`` runs) leaves it waiting forever, re-parented to PID 1 (the
reliability probe saw two such workers of ~165 MB each after ``kill -9`` of prep). Each worker here asks the
kernel for SIGKILL when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), and on every platform also runs a
daemon thread that exits the worker once its parent process id changes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5  # how often the fallback thread looks at the parent id


def process_pool(max_workers: int, mp_context: BaseContext | None = None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` whose workers exit when the creating process dies (see the module doc)."""
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=mp_context, initializer=die_with_parent,
                               initargs=(os.getpid(),))


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when ``parent_pid`` is no longer its parent."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the thread below still ends the worker
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="mmfair-parent-watch").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_SECONDS)
    os._exit(1)
