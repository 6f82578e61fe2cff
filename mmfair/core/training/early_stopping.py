"""Early stopping and checkpoint choice on the validation selection score.

The best epoch's weights are kept (a CPU copy) and training stops after ``patience`` epochs without an
improvement. Late fusion's branches share no parameter: each keeps the weights of its own best validation
epoch and stops on its own patience, as separately trained unimodal models would; training then stops when
every branch has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from mmfair.core.fusion import FusionModel
from mmfair.core.training.optim import branch_keys

StateDict = dict[str, torch.Tensor]


def cpu_state(module: torch.nn.Module) -> StateDict:
    """A detached CPU copy of ``module``'s weights."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


@dataclass
class BestEpoch:
    """The best-scoring epoch so far, its weights, and how many epochs have passed without beating it."""

    score: float = -math.inf
    epoch: int = 0
    stale: int = 0
    state: StateDict | None = None

    def offer(self, score: float, epoch: int, weights: Callable[[], StateDict]) -> bool:
        """Keep ``epoch`` (``weights()``) when it scores above the best or nothing is kept yet; True when kept."""
        if not self.state or score > self.score:
            self.score, self.epoch, self.stale, self.state = score, epoch, 0, weights()
            return True
        self.stale += 1
        return False


class EarlyStopping:
    """The per-run policy: the model's best epoch, each independent branch's, and (``keep_epochs``, for the
    other selection rules) every epoch's weights."""

    def __init__(self, patience: int, branches: tuple[str, ...] = (), keep_epochs: bool = False) -> None:
        self.patience = patience
        self.keep_epochs = keep_epochs
        self.overall = BestEpoch()
        self.branches = {m: BestEpoch() for m in branches}
        self.epoch_states: dict[int, StateDict] = {}

    def record_branches(self, epoch: int, scores: dict[str, float], model: FusionModel) -> None:
        current: StateDict = {}  # copied to the host only when a branch improves, at most once an epoch

        def weights(m: str) -> StateDict:
            if not current:
                current.update(cpu_state(model))
            return {k: current[k] for k in branch_keys(model, m)}

        for m, value in scores.items():
            self.branches[m].offer(value, epoch, lambda m=m: weights(m))

    def record(self, epoch: int, score: float, model: torch.nn.Module) -> bool:
        """Offer the epoch's model weights; True when it is the new best."""
        if self.keep_epochs:
            self.epoch_states[epoch] = cpu_state(model)
        return self.overall.offer(score, epoch, lambda: cpu_state(model))

    @property
    def stopped(self) -> bool:
        if self.branches:
            return all(best.stale >= self.patience for best in self.branches.values())
        return self.overall.stale >= self.patience

    def merged_branch_state(self, model: torch.nn.Module) -> StateDict:
        """The model's current weights with every branch's at its own best epoch."""
        state = cpu_state(model)
        for best in self.branches.values():
            state.update(best.state or {})
        return state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``best_*``, ``stale``, ``branch_best`` and (``keep_epochs``) ``epoch_states``."""
        branch_best = {m: {"score": b.score, "epoch": b.epoch, "stale": b.stale, "state": b.state or {}}
                       for m, b in self.branches.items()}
        best = self.overall
        out = {"best_state": best.state, "best_score": best.score, "best_epoch": best.epoch, "stale": best.stale,
               "branch_best": branch_best}
        return {**out, "epoch_states": self.epoch_states} if self.keep_epochs else out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.overall = BestEpoch(state["best_score"], state["best_epoch"], state["stale"], state["best_state"])
        if state.get("branch_best"):
            self.branches = {m: BestEpoch(e["score"], e["epoch"], e["stale"], e["state"])
                             for m, e in state["branch_best"].items()}
        self.epoch_states = state.get("epoch_states") or self.epoch_states
