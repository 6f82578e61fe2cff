"""``checkpoint.pt``: the full training state after every finished epoch, so that an interrupted run
continues where it stopped and ends as an uninterrupted one would (bit-identical on CPU): weights, optimizer,
gradient scaler, the batch-order and modality-dropout generators, torch's global (and CUDA) RNG, the history,
the early-stopping state and the modulator's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmfair.core.fusion import FusionModel
from mmfair.core.io import atomic_path
from mmfair.core.training.amp import MixedPrecision
from mmfair.core.training.early_stopping import EarlyStopping
from mmfair.core.training.hooks import ModulatorHooks


@dataclass
class TrainState:
    """What one training run changes as it goes (and what its checkpoint holds)."""

    model: FusionModel
    optimizer: torch.optim.Optimizer
    amp: MixedPrecision
    generator: torch.Generator  # the batch order
    # train-time modality dropout draws from its own stream, so switching it on leaves the batch order unchanged
    dropout_generator: torch.Generator
    hooks: ModulatorHooks
    stopping: EarlyStopping
    history: list[dict[str, float]] = field(default_factory=list)


class CheckpointStore:
    """Saves a :class:`TrainState` to ``path`` and restores it from there; without a path, does nothing."""

    def __init__(self, path: Path | None, device: torch.device) -> None:
        self.path = None if path is None else Path(path)
        self.device = device

    def save(self, state: TrainState, seconds: float) -> None:
        if self.path is None:
            return
        cuda = self.device.type == "cuda"
        snapshot = {
            "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "grad_scaler": state.amp.state_dict(),
            "generator": state.generator.get_state(), "dropout_generator": state.dropout_generator.get_state(),
            "torch_rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
            "history": state.history, "seconds": seconds, "modulator": state.hooks.state_dict(),
            **state.stopping.state_dict(),
        }  # fmt: skip
        with atomic_path(self.path) as tmp:
            torch.save(snapshot, tmp)

    def resume(self, state: TrainState) -> float | None:
        """Restore ``state`` from the checkpoint; the seconds already trained, or None when there is none."""
        if self.path is None or not self.path.exists():
            return None
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.amp.load_state_dict(saved.get("grad_scaler"))
        state.generator.set_state(saved["generator"])
        if saved.get("dropout_generator") is not None:
            state.dropout_generator.set_state(saved["dropout_generator"])
        torch.set_rng_state(saved["torch_rng"])
        if self.device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        state.history = saved["history"]
        state.stopping.load_state_dict(saved)
        state.hooks.load_state_dict(saved.get("modulator"))
        return saved["seconds"]
