"""``group-dro``: online group distributionally robust optimisation.

Paper: Sagawa et al. (Sagawa, Koh, Hashimoto & Liang), "Distributionally Robust Neural Networks for Group Shifts: On the
Importance of Regularization for Worst-Case Generalization", ICLR 2020 (Algorithm 1, online group DRO).

Mechanism: weights q over the K groups of ``fair_attr`` (uniform at the start). Each step, with L_g the
mean loss of group g's stays in the batch, ``q_g ← q_g · exp(η · (L_g + C/√n_g))`` then normalise, and
the loss is ``Σ_g q_g L_g`` — the weights move toward the group with the higher loss (the worse group).

Deviations, stated plainly:
* groups are the values of the sensitive attribute (``fair_attr``), not the paper's (label × attribute)
  groups: the benchmark asks for robustness across demographic groups;
* the minibatch form of the authors' code (all groups present in the batch updated at once) instead of
  Algorithm 1's one sampled group per step; a group absent from the batch has L_g = 0, as in that code;
* L_g is the method's own training loss restricted to group g (stays outside g are masked out of every
  ``task.loss`` term, so late fusion's unimodal losses are restricted too); the model's auxiliary losses
  are added once, unweighted, and do not enter the q update;
* the generalisation adjustment C/√n_g uses the training-fold group sizes; C = 0 by default;
* the paper stresses strong L2 regularisation or early stopping; mmfair uses its usual early stopping
  and weight decay (no stronger regularisation is added).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from mmfair.core.registry import MODULATORS
from mmfair.core.modulators._base import Groups, Modulator, ModulatorParams, RowWeightedTask, aux_total


class GroupDROParams(ModulatorParams):
    eta: float = Field(0.01, gt=0, description="step size η_q of the group-weight update")
    adjustment: float = Field(0.0, ge=0, description="generalisation adjustment C (adds C/sqrt(n_g) to L_g)")


@MODULATORS.register(
    "group-dro",
    summary="online group DRO: exponentiated-gradient weights toward the worst group's loss",
    paper="Sagawa et al., ICLR 2020",
)
class GroupDRO(Modulator):
    Params = GroupDROParams
    #: ``mmfair study``: the paper's η_q = 0.01 (a decade each way) and its grid C ∈ {0..5} (reference/multifair.md §3.3)
    search_space = {"eta": ("log", 0.001, 0.1), "adjustment": ("choice", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])}
    needs_groups = True
    name = "group-dro"

    def setup(self, model: Any, task: Any, train: Any, config: Any, groups: Groups | None, device: torch.device) -> None:
        super().setup(model, task, train, config, groups, device)
        assert groups is not None
        k = groups.n_groups
        counts = torch.bincount(groups.codes.cpu(), minlength=k).double()
        self.adjust = (self.params.adjustment / counts.clamp_min(1).sqrt()).to(device)
        self.q = torch.full((k,), 1.0 / k, dtype=torch.float64, device=device)
        self.names = groups.names

    def group_losses(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        groups = batch["groups"]
        aux = aux_total(output, output.logits.float())
        losses = []
        for g in range(len(self.q)):
            keep = groups == g
            losses.append(model.training_loss(output, batch, RowWeightedTask(task, keep=keep)) - aux)
        counts = torch.bincount(groups, minlength=len(self.q))
        return losses, counts

    def update(self, losses: torch.Tensor, counts: torch.Tensor) -> None:
        """``q ← q · exp(η (L + adj))``, normalised; absent groups count with L_g = 0."""
        observed = torch.where(counts > 0, losses.double(), torch.zeros_like(losses, dtype=torch.float64))
        self.q = self.q * torch.exp(self.params.eta * (observed + self.adjust))
        self.q = self.q / self.q.sum()

    def loss(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        losses, counts = self.group_losses(model, output, batch, task)
        stacked = torch.stack([loss.float() for loss in losses])
        with torch.no_grad():
            self.update(stacked.detach(), counts)
        q = self.q.to(stacked.dtype)
        return (q * stacked).sum() + aux_total(output, stacked)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        out = super().on_epoch_end(epoch)
        out.update({f"modulator_q[{name}]": float(self.q[g]) for g, name in enumerate(self.names)})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q = state["q"].to(self.q.device, self.q.dtype)
