"""How a training process uses the machine: seeds, CPU threads, the compiled forward, peak memory."""

from __future__ import annotations

import contextlib
import logging
import random
import resource
from typing import Any, Callable, Iterator

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op CPU threads inside the block (0 keeps torch's setting).

    The models here are small and sequential (48 LSTM steps): one thread is about as fast as two on an
    idle machine and 10-100x faster on a busy one, where spinning OpenMP threads wait for each other.
    """
    previous = torch.get_num_threads()
    if n > 0 and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def compiled_forward(model: torch.nn.Module, device: torch.device) -> Callable[..., Any]:
    """``torch.compile(model)`` on CUDA (dynamic shapes: the last batch is smaller); the eager model elsewhere."""
    if device.type != "cuda":
        log.info("compile: ignored on %s (only CUDA runs are compiled)", device)
        return model
    return torch.compile(model, dynamic=True)
