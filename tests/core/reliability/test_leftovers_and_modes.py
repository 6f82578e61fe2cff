"""Nothing left behind, outputs respect the umask (issue 16, 5 and 7): after ``kill -9`` of prep,
``.source.partial-<pid>/`` and ``data/.*.tmp`` stayed; atomic writes created files mode 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mmfair.core.config import SyntheticConfig
from mmfair.core.synthetic import generate_source
from mmfair.core.io import current_umask, process_alive, remove_stale_temporaries, write_text_atomic


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not process_alive(proc.pid)
    return proc.pid


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    write_text_atomic(tmp_path / "out.txt", "x")
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_only_a_dead_process_s_temporaries_are_removed(tmp_path):
    dead, live = dead_pid(), os.getppid()
    names = {
        f".features.h5.{dead}.tmp": True,            # prep's staged outputs
        f".cohort.csv.{dead}.k3j_9x2a.tmp": True,    # atomic_path
        f".source.partial-{dead}": True,             # the synthetic source's staging folder
        f".source.old-{dead}": True,
        f".features.h5.{live}.tmp": False,           # a running process's
        f".metrics.csv.{os.getpid()}.abcd1234.tmp": False,  # our own
        "features.h5": False,
        ".prep-duckdb-spill": False,
        f"notes.{dead}.tmp": False,                  # not hidden: not ours
    }
    for name in names:
        path = tmp_path / name
        if "partial" in name or "old" in name:
            (path / "mimiciv").mkdir(parents=True)
            (path / "mimiciv" / "x.csv").write_text("a\n")
        else:
            path.write_text("x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, gone in names.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, gone in names.items() if not gone)


def test_prep_removes_what_a_killed_prep_left_in_data(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "data" / "prep"))
    from mimic_tree import build_tree

    from mmfair.core.config import PrepConfig
    from mmfair.core.data.prep import run_prep
    from mmfair.core.workspace import Workspace

    mimic, cxr = build_tree(tmp_path / "src")
    ws = Workspace.resolve(tmp_path / "ws")
    ws.data.mkdir(parents=True)
    dead = dead_pid()
    leftovers = [ws.data / f".features.h5.{dead}.tmp", ws.data / f".prep.json.{dead}.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    run_prep(PrepConfig(mimic_root=mimic, cxr_root=cxr, skip_encoder=True, workers=1), ws)
    assert not any(p.exists() for p in leftovers)
    assert not list(ws.data.glob(".*.tmp"))


def test_the_synthetic_generator_removes_a_killed_generator_s_staging_folder(tmp_path):
    dead = dead_pid()
    staging = tmp_path / f".source.partial-{dead}"
    (staging / "mimiciv").mkdir(parents=True)
    generate_source(SyntheticConfig(n_stays=12, seed=7, n_encoder_subjects=4, min_image_size=48,
                                    max_image_size=64), tmp_path / "source")
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]
