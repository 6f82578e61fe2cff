"""Shared pieces of the fusion-method tests: random batches (EHR values ‖ an observed mask, CXR embeddings
with a zero placeholder where absent, labels random 0/1 or zeros), a binary task's loss, and the autouse
fixture that runs the tiny models on one CPU thread (import it into a test module to use it; a conftest.py
here would shadow the training tests' ``from conftest import …``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """One intra-op thread: fastest for these tiny models, and robust on a busy machine."""
    from mmfair.core.training.trainer import cpu_threads

    with cpu_threads(1):
        yield


def random_batch(present_cxr: torch.Tensor, n_features: int, cxr_dim: int, seq_len: int, *, n_outputs: int = 2,
                 seed: int = 0, zero_labels: bool = False, mask_rate: float = 0.4) -> dict:
    n = len(present_cxr)
    g = torch.Generator().manual_seed(seed)
    ehr = torch.randn(n, seq_len, 2 * n_features, generator=g)
    ehr[..., n_features:] = (torch.rand(n, seq_len, n_features, generator=g) < mask_rate).float()
    cxr = torch.randn(n, cxr_dim, generator=g)
    cxr[~present_cxr] = 0.0
    labels = torch.zeros(n, n_outputs) if zero_labels else (torch.rand(n, n_outputs, generator=g) > 0.5).float()
    return {
        "inputs": {"ehr": ehr, "cxr": cxr},
        "present": {"ehr": torch.ones(n, dtype=torch.bool), "cxr": present_cxr.clone()},
        "labels": labels,
    }


class BinaryTask:
    """The loss of a binary/multilabel task (mean BCE over labels, weighted over rows), without the cohort."""

    kind = "binary"

    @staticmethod
    def loss(logits, labels, weight=None):
        per_row = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
        w = torch.ones_like(per_row) if weight is None else weight.float()
        return (per_row * w).sum() / w.sum().clamp_min(1.0)
