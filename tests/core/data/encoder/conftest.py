import pytest

from toy_cxr import make_toy_cxr


@pytest.fixture(scope="session")
def toy_set():
    return make_toy_cxr(400, size=48, seed=0)
