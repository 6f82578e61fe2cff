import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mimic_tree import build_tree  # noqa: E402

from mmfair.core.config import PrepConfig  # noqa: E402
from mmfair.core.data.prep import run_prep  # noqa: E402
from mmfair.core.workspace import Workspace  # noqa: E402


@pytest.fixture
def tree(tmp_path):
    """A fresh copy of the hand-written tree (tests that damage it use this one)."""
    return build_tree(tmp_path / "src")


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    """The tree prepped once per module (encoder skipped): (workspace, result, mimic_root, cxr_root)."""
    root = tmp_path_factory.mktemp("prepped")
    mimic, cxr = build_tree(root / "src")
    ws = Workspace.resolve(root / "ws")
    result = run_prep(PrepConfig(mimic_root=mimic, cxr_root=cxr, skip_encoder=True, workers=1), ws)
    return ws, result, mimic, cxr
