"""The trainer's view of an optional modulator (``modulators/_base.py``): every hook falls back to the plain
trainer's behaviour when there is none, so the loop never asks which."""

from __future__ import annotations

from typing import Any

import torch

from mmfair.core.fusion import FusionModel


class ModulatorHooks:
    def __init__(self, modulator: Any | None) -> None:
        self.modulator = modulator

    def setup(self, model: FusionModel, task: Any, train: Any, config: Any, groups: Any | None,
              device: torch.device) -> torch.Tensor | None:
        """Set the modulator up; the training rows' group codes on ``device`` when it needs them, else None."""
        if self.modulator is None:
            return None
        self.modulator.setup(model, task, train, config, groups, device)
        if self.modulator.needs_groups and groups is not None:
            return groups.codes.to(device)
        return None

    def on_epoch_start(self, epoch: int) -> None:
        if self.modulator is not None:
            self.modulator.on_epoch_start(epoch)

    def epoch_order(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The modulator's order of the training rows, or a random permutation drawn from ``generator``."""
        order = self.modulator.batch_order(rows, generator) if self.modulator is not None else None
        if order is None:
            order = rows[torch.randperm(len(rows), generator=generator)]
        return order

    def loss(self, model: FusionModel, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        if self.modulator is None:
            return model.training_loss(output, batch, task)
        return self.modulator.loss(model, output, batch, task)

    def after_backward(self, model: FusionModel, output: Any, batch: dict[str, Any]) -> None:
        if self.modulator is not None:
            self.modulator.after_backward(model, output, batch)

    def lr_factors(self) -> dict[str, float]:
        return self.modulator.lr_factors() if self.modulator is not None else {}

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """The modulator's history.csv columns for the epoch."""
        return self.modulator.on_epoch_end(epoch) if self.modulator is not None else {}

    def state_dict(self) -> dict[str, Any] | None:
        return self.modulator.state_dict() if self.modulator is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.modulator is not None and state is not None:
            self.modulator.load_state_dict(state)
