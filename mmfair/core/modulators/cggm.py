"""``cggm``: classifier-guided gradient modulation (magnitude and direction) for modality balance.

Paper: Guo et al., "Classifier-guided Gradient Modulation for Enhanced
Multimodal Learning", NeurIPS 2024 (arXiv 2411.01409); mechanism checked against the authors' public
code as summarised in ``reference/multifair.md`` §3.1 (CGGM is MultiFair's parent).

Mechanism: one auxiliary classifier per modality on the *detached* modality embedding (trained with its
own optimiser, used only in training). Per step, Δε_m is the change of modality m's unimodal metric
(accuracy by default) since the previous step, and ``B_m = (Σ_k Δε_k − Δε_m) / Σ_k Δε_k`` (signed, so
Σ_m B_m = M − 1): the modality that is improving faster is slowed. After backward every encoder-m
gradient is multiplied by ``ρ B_m``; the direction loss ``L_gm = (1/M)[Σ_m |B_m| − Σ_m B_m cos(W_out,
W_m)]`` (the cosine between the fused head's output-layer weights and each auxiliary head's, as the code
computes it) is added with weight λ.

Deviations, stated plainly:
* L_gm is added to the *same* step's loss (the code adds the previous step's term to the next loss);
* the signed formula explodes or changes sign when Σ Δε is near 0 — a property of the paper's formula,
  kept; only an exactly zero sum is guarded (B = (M−1)/M each, the balanced value);
* the auxiliary heads are Linear → ReLU → Linear with the fused head's input width (so the cosine is
  defined), without dropout (it would draw from the model's random stream), lr = the run's lr;
* the metric is the batch accuracy at p ≥ 0.5 (mean over labels; arg-max for multiclass), over the stays
  that have the modality; ``metric=auroc`` uses the batch ROC-AUC instead; a batch where a modality's
  metric is undefined keeps the previous B;
* the first step (no previous metric) uses acc₀ = 0 as the code does, so every Δε is the first accuracy;
* optimizer: the authors' code trains with Adam/AdamW and scales gradients (the paper claims optimiser-
  agnosticism, but Adam divides a persistent gradient factor away). Here ρ B_m is applied under the base
  method's optimizer through encoder m's learning rate (``modulate_via=lr``, the default), so it scales the
  actual update; ``--modulate-via grad`` (with ``--optimizer adam``) is the code's own form. A negative B
  (the signed formula) gives a negative learning rate in lr mode and a negated gradient in grad mode: both
  reverse the encoder's update, as the formula says. history.csv shows how often:
  ``modulator_B_negative[<m>]`` is the epoch's share of steps with B_m < 0, next to the applied
  ``modulator_factor[<m>]`` (ρ B_m) and ``modulator_B[<m>]``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from mmfair.core.registry import MODULATORS
from mmfair.core.modulators._base import (
    Groups,
    Modulator,
    ModulatorParams,
    encoder_groups,
    multimodal_modalities,
    exact_auc,
    label_matrix,
    score_matrix,
)
from mmfair.core.modulators.multifair import resolve_head_weight
from mmfair.core.modulators.ogm_ge import embedding_dims, probe_output


class CGGMParams(ModulatorParams):
    rho: float = Field(1.3, gt=0, description="ρ: scale of the encoder coefficients")
    lambda_gm: float = Field(0.2, ge=0, description="λ: weight of the direction loss")
    metric: Literal["accuracy", "auroc"] = "accuracy"


def cggm_coefficients(deltas: dict[str, float]) -> dict[str, float]:
    """``B_m = (Σ Δ − Δ_m) / Σ Δ`` (signed; Σ B = M − 1); an exactly zero sum gives (M−1)/M each."""
    m = len(deltas)
    if m <= 1:
        return {k: 1.0 for k in deltas}
    total = sum(deltas.values())
    if total == 0:
        return {k: (m - 1) / m for k in deltas}
    return {k: (total - d) / total for k, d in deltas.items()}


def batch_accuracy(task: Any, logits: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    if task.kind == "multiclass":
        return float((logits.argmax(dim=1) == labels.long()).float().mean())
    return float(((logits >= 0).float() == labels.float().reshape(logits.shape)).float().mean())


@MODULATORS.register(
    "cggm",
    summary="CGGM: auxiliary unimodal classifiers steer encoder gradient magnitude (ρ B_m) and direction (L_gm)",
    paper="Guo et al., NeurIPS 2024",
)
class CGGM(Modulator):
    Params = CGGMParams
    #: ``mmfair study``: around the authors' README settings ρ = 1.3, λ = 0.2 (MOSI; reference/multifair.md §3.1)
    search_space = {"rho": ("float", 0.8, 2.0), "lambda_gm": ("float", 0.05, 0.5)}
    name = "cggm"
    scales_gradients = True

    def setup(self, model: Any, task: Any, train: Any, config: Any, groups: Groups | None, device: torch.device) -> None:
        super().setup(model, task, train, config, groups, device)
        self.modalities = multimodal_modalities(model, config, "cggm")
        self.encoders = encoder_groups(model, self.modalities)
        probe = probe_output(model, train)
        dims = embedding_dims(model, probe)
        self.n_outputs = int(probe.logits.shape[1])
        self.head_weight = resolve_head_weight(model, self.n_outputs, "cggm") if self.params.lambda_gm > 0 else None
        hidden = int(self.head_weight.shape[1]) if self.head_weight is not None else max(dims.values())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config.seed) + 1299709)
            self.aux = nn.ModuleDict({
                m: nn.Sequential(nn.Linear(dims[m], hidden), nn.ReLU(), nn.Linear(hidden, self.n_outputs))
                for m in self.modalities
            })
        self.aux.to(device)
        self.aux_opt = torch.optim.AdamW(self.aux.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.prev = {m: 0.0 for m in self.modalities}
        self.B = {m: (len(self.modalities) - 1) / len(self.modalities) for m in self.modalities}

    def direction_loss(self) -> torch.Tensor:
        assert self.head_weight is not None
        w = self.head_weight.float().reshape(-1)
        terms = [abs(self.B[m]) - self.B[m] * torch.nn.functional.cosine_similarity(
            w, self.aux[m][-1].weight.detach().float().reshape(-1), dim=0) for m in self.modalities]
        return torch.stack(terms).mean()

    def loss(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        base = model.training_loss(output, batch, task)
        present, labels = batch["present"], batch["labels"]
        with torch.autocast(device_type=output.logits.device.type, enabled=False):
            logits = {m: self.aux[m](output.embeddings[m].detach().float()) for m in self.modalities}
            aux_loss = sum(task.loss(logits[m], labels, present[m]) for m in self.modalities)
            self.aux_opt.zero_grad(set_to_none=True)
            aux_loss.backward()
            self.aux_opt.step()
        with torch.no_grad():
            metric = {}
            for m in self.modalities:
                rows = present[m].bool()
                if self.params.metric == "accuracy":
                    metric[m] = batch_accuracy(task, logits[m][rows], labels[rows])
                else:
                    metric[m] = exact_auc(label_matrix(task, labels, self.n_outputs)[rows], score_matrix(task, logits[m])[rows])
            if not any(math.isnan(v) for v in metric.values()):
                self.B = cggm_coefficients({m: metric[m] - self.prev[m] for m in self.modalities})
                self.prev = metric
        for m in self.modalities:
            self.log_value(f"B[{m}]", self.B[m])
            self.log_value(f"B_negative[{m}]", float(self.B[m] < 0))
        if self.head_weight is not None:
            base = base + self.params.lambda_gm * self.direction_loss()
        return base

    @torch.no_grad()
    def after_backward(self, model: Any, output: Any, batch: dict[str, Any]) -> None:
        self.scale_encoders(self.encoders, {m: self.params.rho * self.B[m] for m in self.modalities})

    def state_dict(self) -> dict[str, Any]:
        return {"aux": self.aux.state_dict(), "aux_opt": self.aux_opt.state_dict(),
                "prev": torch.tensor([self.prev[m] for m in self.modalities], dtype=torch.float64),
                "B": torch.tensor([self.B[m] for m in self.modalities], dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.aux.load_state_dict(state["aux"])
        self.aux_opt.load_state_dict(state["aux_opt"])
        self.prev = dict(zip(self.modalities, state["prev"].tolist()))
        self.B = dict(zip(self.modalities, state["B"].tolist()))
