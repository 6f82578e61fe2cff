"""Worker pools die with their parent (issue 16, 5): after ``kill -9`` of prep, two pool workers re-parented
to PID 1 stayed alive (~165 MB each, 22 minutes observed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")

# prep's image decoding, each decode slowed down so the pool is busy when the parent is killed
SCRIPT = textwrap.dedent("""
    import sys, time
    import mmfair.core.data.images as images

    real = images.load_square_uint8
    def slow(path, size):
        time.sleep(0.2)
        return real(path, size)
    images.load_square_uint8 = slow  # forked workers inherit the patched module
    paths = sorted(sys.argv[1:])
    print("decoding", flush=True)
    images.load_images(paths, 16, workers=2)
    print("finished", flush=True)
""")


def children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.update(int(t) for t in text)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its exit status waits to be read


def test_image_pool_workers_exit_when_prep_is_killed(tmp_path):
    paths = []
    for i in range(80):  # above load_images' 64-image threshold for a pool
        path = tmp_path / f"{i:03d}.png"
        Image.fromarray(np.full((8, 8), i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *paths], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "decoding"
        deadline = time.monotonic() + 30
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = children(proc.pid)
            time.sleep(0.05)
        assert len(workers) == 2, f"pool workers not seen: {workers}"
        time.sleep(0.5)  # let the workers pick up tasks
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [w for w in workers if alive(w)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    for w in survivors:  # do not leave them behind if the test fails
        os.kill(w, signal.SIGKILL)
    assert survivors == []


def test_the_pool_still_decodes_every_image_in_order(tmp_path):
    from mmfair.core.data.images import load_images

    paths = []
    for i in range(70):  # above the 64-image threshold: decoded by the pool
        path = tmp_path / f"{i:03d}.png"
        Image.fromarray(np.full((8, 8), i, dtype=np.uint8)).save(path)
        paths.append(path)
    out = load_images(paths, 16, workers=2)
    assert out.shape == (70, 16, 16)
    assert [int(v) for v in out[:, 8, 8]] == list(range(70))  # constant images keep their value at the centre
