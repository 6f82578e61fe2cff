"""Fixtures of the training tests (the workspace builder lives in tiny_workspace.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfair.core.workspace import Workspace
from tiny_workspace import ENCODER_ID, PHENOTYPES, build_tiny_workspace  # noqa: F401


@pytest.fixture
def tiny_ws(tmp_path: Path) -> Workspace:
    return build_tiny_workspace(tmp_path / "ws")
