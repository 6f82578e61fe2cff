"""Fusion tests run their tiny models on one CPU thread: fastest, and robust on a busy machine."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    from mmfair.core.training.trainer import cpu_threads

    with cpu_threads(1):
        yield
