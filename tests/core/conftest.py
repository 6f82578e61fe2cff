"""Shared fixtures of the library tests: ``tests/core`` is importable, so any test can
``from tiny_workspace import build_tiny_workspace`` (one builder for the training, modulator, study and
evaluation tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmfair.core.workspace import Workspace  # noqa: E402
from tiny_workspace import build_tiny_workspace  # noqa: E402


@pytest.fixture
def tiny_ws(tmp_path: Path) -> Workspace:
    return build_tiny_workspace(tmp_path / "ws")
