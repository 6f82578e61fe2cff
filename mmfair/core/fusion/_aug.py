"""``aug-base``: the AUG architecture — separate modality encoders sharing one configurable classifier.

Paper: Jiang et al. (Jiang, Huang & Yang), "Rethinking Multimodal Learning from the Perspective of
Mitigating Classification Ability Disproportion", NeurIPS 2025 (arXiv 2502.20120, the method called AUG;
mechanism checked against the authors' public code). This module is the architecture and its sustained-
boosting loss; the adaptive classifier assignment that switches boosting layers on lives in the ``aug``
modulator, and the ``aug`` preset (``modulators/aug.py``) is this model trained with it.

Mechanism: each modality m has its encoder, an embedding layer ``Linear(H, H) → ReLU`` and up to
``max_boost`` boosting layers ``Linear(H, H) → ReLU`` that read the encoder output; every one of them is
followed by the **shared** output layer ``Linear(H, K)``. The unimodal logits are the running sum
``z_m = out(embed_m(h)) + Σ_{active l} out(boost_m,l(h))``. The training loss of modality m is, as in the
authors' code, ``ℓ(z_m) + ℓ(prefix) + ℓ(last) − c·ℓ(last; y⊙p_prefix)`` once a boosting layer is active
(``prefix`` = the sum before the newest layer, ``last`` = the newest layer's own logits, ``c`` =
``residual_weight``): the newest layer fits the residual the earlier ones leave. Prediction: ``α·z_ehr +
(1 − α)·z_cxr``, and ``z_ehr`` alone for a stay without a CXR.

Deviations, stated plainly:
* the boosting layers are **preallocated** (``max_boost`` per modality, Xavier-normal weights, zero bias,
  as the authors initialise an added layer) and switched on by the buffer ``active_boosts``; an inactive
  layer takes no part in the forward pass, so it gets no gradient and AdamW leaves it untouched. The
  trainer's optimiser therefore holds every layer from the start — an activated layer trains (the layers
  CareBench adds are never given to its optimiser) — and ``state_dict`` shapes never change, so a
  checkpoint resumes and ``model.pt`` loads without knowing how many layers were switched on;
* one optimiser step per batch on the sum of the modality losses (the code takes one step per modality
  per batch); the CXR loss counts only stays with a CXR, so an absent CXR never trains the classifier;
* the residual term ``ℓ(last) − c·ℓ(last; y⊙p_prefix)`` is written as ``(1 − c·p_prefix(y)) · ℓ(last)``
  (equal for softmax cross-entropy, whose loss is linear in the target); binary and multilabel tasks use
  it per label on the two-class view (p(y) = sigmoid of the logit of the true value), because the raw
  difference of two sigmoid cross-entropies is unbounded below;
* ``α`` (``alpha``) is a method hyperparameter of the model (it changes predictions), not of the modulator.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder
from mmfair.core.registry import FUSIONS


class AUGParams(FusionParams):
    alpha: float = Field(0.5, ge=0, le=1, description="weight α of the EHR logits in α·z_ehr + (1 − α)·z_cxr")
    max_boost: int = Field(3, ge=0, le=16, description="boosting layers preallocated per modality")
    residual_weight: float = Field(0.5, ge=0, le=1, description="c in the residual term (1 − c·p_prefix(y))·ℓ(last)")


def true_value_log_prob(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(true value) per row and label, float [B, L] (L = 1 for multiclass: log-softmax of the class)."""
    logits = logits.float()
    if kind == "multiclass":
        return torch.log_softmax(logits, dim=1).gather(1, labels.long().reshape(-1, 1))
    y = labels.float().reshape(logits.shape)
    return F.logsigmoid(torch.where(y > 0.5, logits, -logits))


def masked_row_mean(per_row: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_row`` over ``keep`` (selected with where, so excluded rows never leak); 0 if empty."""
    per_row = torch.where(keep, per_row, torch.zeros((), dtype=per_row.dtype, device=per_row.device))
    return per_row.sum() / keep.sum().clamp_min(1).to(per_row.dtype)


class SharedBoostedClassifier(nn.Module):
    """Per-modality embedding + preallocated boosting layers, all read out by one shared linear layer."""

    def __init__(self, modalities: tuple[str, ...], in_dims: dict[str, int], hidden_dim: int, n_outputs: int,
                 max_boost: int) -> None:
        super().__init__()
        self.embed = nn.ModuleDict({m: nn.Sequential(nn.Linear(in_dims[m], hidden_dim), nn.ReLU()) for m in modalities})
        self.boost = nn.ModuleDict({m: nn.ModuleList(nn.Linear(in_dims[m], hidden_dim) for _ in range(max_boost))
                                    for m in modalities})
        for layers in self.boost.values():
            for layer in layers:
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.out = nn.Linear(hidden_dim, n_outputs)

    def forward(self, modality: str, h: torch.Tensor, n_active: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(summed logits, sum before the newest active layer, the newest layer's own logits)."""
        total = self.out(self.embed[modality](h))
        prefix = last = None
        for layer in self.boost[modality][:n_active]:
            last = self.out(F.relu(layer(h)))
            prefix, total = total, total + last
        return total, prefix, last


@FUSIONS.register(
    "aug-base",
    summary="AUG architecture: modality encoders + one shared classifier with switchable boosting layers "
            "(α-weighted unimodal logits); without the aug modulator no layer is switched on",
    paper="Jiang et al., NeurIPS 2025 (arXiv 2502.20120)",
)
class AUGNet(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True
    Params = AUGParams
    # the tuning search space (mmfair study): Params field -> ("log"|"float"|"int", low, high) or ("choice", [values])
    search_space = {"alpha": ("float", 0.2, 0.8), "residual_weight": ("float", 0.0, 1.0)}

    def __init__(self, spec: FusionSpec, params: AUGParams | None = None) -> None:
        super().__init__(spec, params)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        dims = {m: self.encoders[m].out_dim for m in self.modalities}
        self.head = SharedBoostedClassifier(self.modalities, dims, spec.hidden_dim, spec.n_outputs, self.params.max_boost)
        self.register_buffer("active_boosts", torch.zeros(len(self.modalities), dtype=torch.long))

    # ---- boosting layers -----------------------------------------------------------------------
    def n_active(self, modality: str) -> int:
        return int(self.active_boosts[self.modalities.index(modality)])

    def activate_boost(self, modality: str) -> bool:
        """Switch on the next boosting layer of ``modality``; False when all ``max_boost`` already are."""
        index = self.modalities.index(modality)
        if int(self.active_boosts[index]) >= self.params.max_boost:
            return False
        self.active_boosts[index] += 1
        return True

    def boost_parameters(self, modality: str, layer: int) -> list[nn.Parameter]:
        return list(self.head.boost[modality][layer].parameters())

    # ---- forward and loss ----------------------------------------------------------------------
    def forward(self, batch: Batch) -> Output:
        embeddings = {m: self.encoders[m](batch["inputs"][m]) for m in self.modalities}
        unimodal = {m: self.head(m, embeddings[m], self.n_active(m))[0] for m in self.modalities}
        alpha = self.params.alpha
        mixed = alpha * unimodal["ehr"] + (1 - alpha) * unimodal["cxr"]
        logits = torch.where(batch["present"]["cxr"][:, None], mixed, unimodal["ehr"])
        return Output(logits=logits, embeddings=embeddings, unimodal_logits=unimodal)

    def modality_loss(self, modality: str, h: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, task: Any) -> torch.Tensor:
        """Sustained-boosting loss of one modality over the rows in ``keep``."""
        total, prefix, last = self.head(modality, h, self.n_active(modality))
        loss = task.loss(total, labels, keep)
        if last is None:
            return loss
        loss = loss + task.loss(prefix, labels, keep)
        prefix_confidence = true_value_log_prob(task.kind, prefix.detach(), labels).exp()
        residual = -(1 - self.params.residual_weight * prefix_confidence) * true_value_log_prob(task.kind, last, labels)
        return loss + masked_row_mean(residual.mean(dim=1), keep)

    def training_loss(self, output: Output, batch: Batch, task: Any) -> torch.Tensor:
        """Sum over modalities of the boosting loss, each over the stays where the modality is present."""
        loss = output.logits.new_zeros((), dtype=torch.float32)
        for m in self.modalities:
            loss = loss + self.modality_loss(m, output.embeddings[m], batch["labels"], batch["present"][m].bool(), task)
        for aux in output.aux_losses.values():
            loss = loss + aux
        return loss
