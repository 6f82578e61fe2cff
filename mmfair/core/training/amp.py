"""Mixed precision: bfloat16 autocast on a CUDA device that supports it, else float16 with a gradient scaler;
float32 everywhere else (CPU runs stay bit-identical for a seed). Shared by the trainer and the prep CXR
encoder."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class MixedPrecision:
    """The autocast context and, for float16, the gradient scaler of one training run on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype(device) == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backpropagate ``loss``; the gradients come out unscaled, ready for hooks and clipping."""
        if self.scaler is None:
            loss.backward()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step (skipped by the scaler when a float16 gradient overflowed)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
