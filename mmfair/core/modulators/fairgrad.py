"""``fairgrad``: fairness-aware gradient descent by per-(label, group) example reweighting.

Paper: Maheshwari & Perrot, "FairGrad: Fairness Aware Gradient Descent", arXiv 2206.10923 (2022); the
Lagrangian view of group-fairness constraints it builds on is that of the reductions approach of
Agarwal et al. (ICML 2018). Not the multi-task "FairGrad" of Ban & Ji (ICML 2024).

Mechanism (equalized odds, the default): for every cell (label y, group s) the batch violation is
``F_{y,s} = acc_{y,s} − acc_y`` (accuracy of the thresholded predictions among stays with label y in group
s, minus among all stays with label y). Two non-negative multipliers per cell follow projected ascent,
``λ⁺ ← max(0, λ⁺ + η(F − ε))`` and ``λ⁻ ← max(0, λ⁻ + η(−F − ε))``. With Λ = λ⁺ − λ⁻, the linear
constraint matrix ``C_{(y,s),(y',s')} = [y = y'] P(s'|y) − [(y,s) = (y',s')]`` (training-fold
frequencies) and the joint frequency P_{y,s}, each stay's loss is multiplied by
``w_{y,s} = 1 + (Cᵀ Λ)_{y,s} / P_{y,s} = 1 + (P(s|y) Σ_{s'} Λ_{y,s'} − Λ_{y,s}) / P_{y,s}``:
cells that are advantaged (F > 0) are down-weighted, the others up-weighted. Weights may become
negative by design (the paper's Lagrangian). ``equal_opportunity`` keeps only the constraints of the
desirable label (y = 1).

Deviations, stated plainly:
* binary and multiclass tasks only (the paper's setting); a multilabel task is refused with a clear error;
* predictions for the violation estimates are ``p ≥ 0.5`` (binary) or the arg-max class (multiclass), as
  in the authors' package; a cell absent from the batch reuses its previous violation (0 at the start),
  as that package does;
* the weights multiply the method's own per-stay task losses (every ``task.loss`` term of its training
  loss, e.g. both unimodal losses of late fusion); auxiliary losses are left unweighted;
* only the equalized-odds and equal-opportunity constraints are implemented (not accuracy or
  demographic parity);
* P and P(s|y) come from the training-fold stays the model trains on; a cell with P = 0 keeps weight 1.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from mmfair.core.errors import ConfigError
from mmfair.core.registry import MODULATORS
from mmfair.core.modulators._base import Groups, Modulator, ModulatorParams, RowWeightedTask


class FairGradParams(ModulatorParams):
    fairness_measure: Literal["equal_odds", "equal_opportunity"] = "equal_odds"
    fairness_rate: float = Field(0.01, gt=0, description="step size η of the multiplier updates")
    epsilon: float = Field(0.0, ge=0, description="allowed slack ε of each constraint")


def _class_index(task: Any, labels: torch.Tensor) -> torch.Tensor:
    if task.kind == "multiclass":
        return labels.long().reshape(-1)
    return (labels.reshape(len(labels), -1)[:, 0] > 0.5).long()


def _predictions(task: Any, logits: torch.Tensor) -> torch.Tensor:
    if task.kind == "multiclass":
        return logits.argmax(dim=1)
    return (logits[:, 0] >= 0).long()


@MODULATORS.register(
    "fairgrad",
    summary="FairGrad: per-(label, group) loss weights from Lagrange multipliers of fairness constraints",
    paper="Maheshwari & Perrot, arXiv 2206.10923 (2022)",
)
class FairGrad(Modulator):
    Params = FairGradParams
    #: ``mmfair study``: η = 0.01, ε = 0 in the authors' settings (reference/multifair.md §3.3); η a decade each way
    search_space = {"fairness_rate": ("log", 0.001, 0.1)}
    needs_groups = True
    name = "fairgrad"

    def setup(self, model: Any, task: Any, train: Any, config: Any, groups: Groups | None, device: torch.device) -> None:
        super().setup(model, task, train, config, groups, device)
        assert groups is not None
        if task.kind not in ("binary", "multiclass"):
            raise ConfigError(f"modulator 'fairgrad' supports binary and multiclass tasks, not {task.kind} ('{task.name}')")
        used = model.scorable(train.present).to(groups.codes.device)
        y = _class_index(task, train.labels).to(groups.codes.device)[used]
        s = groups.codes[used]
        n_y = int(getattr(task, "n_classes", 2)) if task.kind == "multiclass" else 2
        k = groups.n_groups
        joint = torch.zeros(n_y, k, dtype=torch.float64)
        joint.index_put_((y.cpu(), s.cpu()), torch.ones(len(y), dtype=torch.float64), accumulate=True)
        self.P = (joint / max(len(y), 1)).to(device)
        self.P_s_given_y = (joint / joint.sum(dim=1, keepdim=True).clamp_min(1)).to(device)
        self.lam_plus = torch.zeros(n_y, k, dtype=torch.float64, device=device)
        self.lam_minus = torch.zeros(n_y, k, dtype=torch.float64, device=device)
        self.last_violation = torch.zeros(n_y, k, dtype=torch.float64, device=device)
        self.n_y, self.k = n_y, k

    def violations(self, correct: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``acc_{y,s} − acc_y`` per cell; NaN where the cell (or the label) has no stay in the batch."""
        n, c = self.n_y, self.k
        cell = y * c + s
        count = torch.bincount(cell, minlength=n * c).double().reshape(n, c)
        hits = torch.bincount(cell, weights=correct.double(), minlength=n * c).reshape(n, c)
        acc_cell = hits / count
        acc_y = hits.sum(1) / count.sum(1)
        out = acc_cell - acc_y[:, None]
        return torch.where(count > 0, out, torch.full_like(out, float("nan")))

    def weights(self) -> torch.Tensor:
        lam = self.lam_plus - self.lam_minus
        partial = self.P_s_given_y * lam.sum(dim=1, keepdim=True) - lam
        return torch.where(self.P > 0, 1.0 + partial / self.P.clamp_min(1e-12), torch.ones_like(self.P))

    def update(self, violation: torch.Tensor) -> None:
        violation = torch.where(torch.isnan(violation), self.last_violation, violation)
        if self.params.fairness_measure == "equal_opportunity":
            violation = violation.clone()
            violation[:1] = 0.0  # only the desirable label (y = 1) is constrained
        self.last_violation = violation
        eta, eps = self.params.fairness_rate, self.params.epsilon
        self.lam_plus = (self.lam_plus + eta * (violation - eps)).clamp_min(0.0)
        self.lam_minus = (self.lam_minus + eta * (-violation - eps)).clamp_min(0.0)

    def loss(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        y = _class_index(task, batch["labels"])
        s = batch["groups"]
        with torch.no_grad():
            used = model.scorable(batch["present"])
            correct = _predictions(task, output.logits.float()) == y
            self.update(self.violations(correct[used], y[used], s[used]))
            row_weight = self.weights()[y, s].float()
        return model.training_loss(output, batch, RowWeightedTask(task, row_weight=row_weight))

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        out = super().on_epoch_end(epoch)
        w = self.weights()
        out["modulator_weight_min"] = float(w.min())
        out["modulator_weight_max"] = float(w.max())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"lam_plus": self.lam_plus.cpu().clone(), "lam_minus": self.lam_minus.cpu().clone(),
                "last_violation": self.last_violation.cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.lam_plus.device
        self.lam_plus = state["lam_plus"].to(device)
        self.lam_minus = state["lam_minus"].to(device)
        self.last_violation = state["last_violation"].to(device)
