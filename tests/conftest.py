import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture(scope="session")
def real_cxr_paths():
    """The two real NIH radiographs shipped in ../shared/reference/real-cxr (also copied to tests/assets)."""
    here = os.path.join(os.path.dirname(__file__), "assets")
    return sorted(os.path.join(here, f) for f in os.listdir(here) if f.endswith(".png"))
