"""``pmr``: prototypical modal rebalance — accelerate the slower modality through class prototypes.

Paper: Fan et al. (Fan, Xu, Wang, Wang & Guo), "PMR: Prototypical Modal Rebalance for Multimodal
Learning", CVPR 2023 (arXiv 2211.07089). The coefficient rule follows the authors' public training code
(``main_Prototype_grad.py``): the slower modality's prototypical cross-entropy gets the constant weight α,
the faster one none.

Mechanism:
* **prototypes**: at the start of every epoch, one pass (no gradient, eval mode) over the training split
  gives, per modality m, the mean embedding of each class, ``c_k^m`` — over the stays where m is present.
  Multiclass tasks have one prototype per class; binary and multilabel tasks one per label and value
  (``c_{j,0}``, ``c_{j,1}``), each label being its own two-class problem;
* **prototype-based prediction**: ``p^m(k | x) = softmax_k(−‖φ_m(x) − c_k^m‖)`` (Euclidean distance; per
  label over its two values for binary/multilabel);
* **imbalance**: per batch, ``s_m`` = mean prototype confidence of the true label over the stays with
  every modality; ``ρ_m = max_k s_k / s_m``. Modality m is *slower* when ``ρ_m > 1 + tolerance``;
* **rebalancing** (only while some modality is slower, and within ``start_epoch..end_epoch``): the
  prototypical cross-entropy ``PCE_m = −log p^m(y | x)`` of each slower modality is added with weight
  ``pce_weight · c_m``, ``c_m = α`` (the authors' code); the fastest modality gets no prototype term
  (``c = 0``) and, during the first ``entropy_epochs`` epochs, the prototype entropy regularisation
  ``− μ · H(p^fast)`` that keeps it from converging prematurely. A stay contributes to a modality's
  terms only where that modality is present.

Deviations, stated plainly:
* the imbalance score is the *mean* true-label prototype confidence over the batch's complete stays (the
  authors' code sums it over the batch; the ratio is the same); the entropy regularisation of the fastest
  modality follows the paper's description (the public code shown does not include it);
* binary and multilabel tasks (the paper is multiclass only) use per-label two-value prototypes; a label
  whose training stays (with the modality) all have the same value has no prototype pair and is left out
  of that modality's terms; a multiclass class without a stay is masked out of the softmax;
* scores use the stays with every modality, so an absent CXR cannot bias ρ; a batch without such a stay
  applies no rebalancing;
* prototypes come from the model at the epoch start (eval mode, no dropout), recomputed every epoch as in
  the authors' code; for more than two modalities ρ is taken against the fastest modality.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from mmfair.core.errors import ConfigError
from mmfair.core.registry import MODULATORS
from mmfair.core.modulators._base import Groups, Modulator, ModulatorParams, multimodal_modalities
from mmfair.core.modulators.ogm_ge import embedding_dims, probe_output

_MASKED = -1e9  # logit of a class without a prototype: exactly zero probability, finite entropy terms


class PMRParams(ModulatorParams):
    alpha: float = Field(1.0, gt=0, description="α: the slower modality's prototypical cross-entropy weight")
    pce_weight: float = Field(1.0, gt=0, description="weight of the prototypical cross-entropy terms")
    entropy_weight: float = Field(0.1, ge=0, description="μ of the fastest modality's entropy regularisation")
    entropy_epochs: int = Field(10, ge=0, description="epochs (from 1) during which the entropy regularisation applies")
    tolerance: float = Field(0.0, ge=0, description="ρ must exceed 1 + tolerance for a modality to count as slower")
    start_epoch: int = Field(1, ge=1, description="first epoch of the rebalancing")
    end_epoch: int = Field(1000, ge=1, description="last epoch of the rebalancing")
    prototype_batch_size: int = Field(1024, ge=1, description="rows per forward pass when computing the prototypes")


def rebalance_coefficients(scores: dict[str, float], alpha: float, tolerance: float = 0.0) -> dict[str, float]:
    """``c_m = α`` for each slower modality (ρ_m = max s / s_m > 1 + tolerance), else 0 (the authors' rule)."""
    fastest = max(scores.values())
    out = {}
    for m, s in scores.items():
        ratio = fastest / s if s > 0 else float("inf")
        out[m] = alpha if ratio > 1.0 + tolerance else 0.0
    return out


def prototype_logits(kind: str, embedding: torch.Tensor, prototypes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Negative Euclidean distances as logits: [B, K] (multiclass) or [B, L, 2] (binary/multilabel)."""
    e = embedding.float()
    if kind == "multiclass":  # prototypes [K, D], valid [K]
        dist = (e[:, None, :] - prototypes[None]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
        return torch.where(valid[None], -dist, torch.full_like(dist, _MASKED))
    dist = (e[:, None, None, :] - prototypes[None]).pow(2).sum(-1).clamp_min(1e-12).sqrt()  # [B, L, 2]
    return -dist


def true_log_prob(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(true label) per row and (binary/multilabel) label: [B, 1] or [B, L]."""
    log_p = torch.log_softmax(logits, dim=-1)
    if kind == "multiclass":
        return log_p.gather(1, labels.long().reshape(-1, 1))
    y = (labels.float().reshape(log_p.shape[:2]) > 0.5).long()
    return log_p.gather(2, y[..., None]).squeeze(2)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last axis."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` holds (same shape; selected with where); 0 when empty."""
    values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return values.sum() / mask.sum().clamp_min(1).to(values.dtype)


@MODULATORS.register(
    "pmr",
    summary="PMR: class prototypes per modality; prototypical CE pushes the slower modality, entropy "
            "regularisation holds back the faster one",
    paper="Fan et al., CVPR 2023",
)
class PMR(Modulator):
    Params = PMRParams
    #: ``mmfair study``: α = 1-3 in the authors' settings (reference/multifair.md §3.1)
    search_space = {"alpha": ("float", 1.0, 3.0)}
    name = "pmr"

    def setup(self, model: Any, task: Any, train: Any, config: Any, groups: Groups | None, device: torch.device) -> None:
        super().setup(model, task, train, config, groups, device)
        if task.kind not in ("binary", "multilabel", "multiclass"):
            raise ConfigError(f"modulator 'pmr' has no prototypes for task kind '{task.kind}'")
        self.modalities = multimodal_modalities(model, config, "pmr")
        probe = probe_output(model, train)
        self.dims = embedding_dims(model, probe)
        self.n_outputs = int(probe.logits.shape[1])
        self.kind = task.kind
        self.model, self.train, self.device = model, train, device
        self.prototypes: dict[str, torch.Tensor] = {}
        self.valid: dict[str, torch.Tensor] = {}
        self.coefficients = {m: 0.0 for m in self.modalities}

    def _on(self) -> bool:
        return self.params.start_epoch <= getattr(self, "epoch", 1) <= self.params.end_epoch

    # ---- prototypes ----------------------------------------------------------------------------
    def _target_matrix(self, labels: torch.Tensor) -> torch.Tensor:
        """One-hot [B, K] (multiclass) or value indicators [B, L, 2] (binary/multilabel), float."""
        if self.kind == "multiclass":
            return F.one_hot(labels.long().reshape(-1), self.n_outputs).float()
        y = labels.float().reshape(len(labels), -1)
        return torch.stack([1.0 - y, y], dim=-1)

    @torch.no_grad()
    def compute_prototypes(self, model: Any, split: Any) -> None:
        """Class means of each modality's embedding over the split's stays where it is present."""
        was_training = model.training
        model.eval()
        sums = {m: None for m in self.modalities}
        counts = {m: None for m in self.modalities}
        for start in range(0, len(split), self.params.prototype_batch_size):
            batch = split.batch(slice(start, start + self.params.prototype_batch_size))
            out = model(batch)
            targets = self._target_matrix(batch["labels"])
            for m in self.modalities:
                keep = batch["present"][m].bool().float()
                weights = targets * keep.reshape(-1, *([1] * (targets.dim() - 1)))
                e = out.embeddings[m].float()
                flat = weights.reshape(len(e), -1)  # [B, K] or [B, 2L]
                s = (flat.T @ e).reshape(*weights.shape[1:], e.shape[1])
                c = weights.sum(0)
                sums[m] = s if sums[m] is None else sums[m] + s
                counts[m] = c if counts[m] is None else counts[m] + c
        model.train(was_training)
        for m in self.modalities:
            self.prototypes[m] = sums[m] / counts[m].clamp_min(1)[..., None]
            present = counts[m] > 0
            self.valid[m] = present if self.kind == "multiclass" else present.all(dim=-1)  # [K] or [L]

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.compute_prototypes(self.model, self.train)

    # ---- loss ----------------------------------------------------------------------------------
    def _label_mask(self, m: str, rows: torch.Tensor) -> torch.Tensor:
        """[B, 1] or [B, L]: rows where m is present × labels/classes with prototypes."""
        if self.kind == "multiclass":
            return rows[:, None]
        return rows[:, None] & self.valid[m][None, :]

    def prototype_terms(self, output: Any, batch: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
        """Per modality: ``logits``, ``log_p_true`` and the row/label ``mask`` of the prototype classifier."""
        terms = {}
        for m in self.modalities:
            logits = prototype_logits(self.kind, output.embeddings[m], self.prototypes[m], self.valid[m])
            terms[m] = {"logits": logits, "log_p_true": true_log_prob(self.kind, logits, batch["labels"]),
                        "mask": self._label_mask(m, batch["present"][m].bool())}
        return terms

    def loss(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        base = model.training_loss(output, batch, task)
        self.coefficients = {m: 0.0 for m in self.modalities}
        paired = torch.stack([batch["present"][m].bool() for m in self.modalities]).all(dim=0)
        if not self._on() or not bool(paired.any()):
            return base
        with torch.autocast(device_type=output.logits.device.type, enabled=False):
            terms = self.prototype_terms(output, batch)
            scores = {}
            for m, t in terms.items():
                mask = t["mask"] & paired[:, None]
                scores[m] = float(masked_mean(t["log_p_true"].detach().exp(), mask))
            if any(not (s > 0) for s in scores.values()):
                return base  # a modality without any scorable label in this batch: no ratio
            self.coefficients = rebalance_coefficients(scores, self.params.alpha, self.params.tolerance)
            extra = base.new_zeros((), dtype=torch.float32)
            slower = [m for m, c in self.coefficients.items() if c > 0]
            if slower:
                for m in slower:
                    pce = masked_mean(-terms[m]["log_p_true"], terms[m]["mask"])
                    extra = extra + self.params.pce_weight * self.coefficients[m] * pce
                    self.log_value(f"pce[{m}]", float(pce.detach()))
                if self.epoch <= self.params.entropy_epochs and self.params.entropy_weight > 0:
                    fastest = max(scores, key=scores.get)
                    t = terms[fastest]
                    h = entropy(t["logits"]).reshape(t["mask"].shape) if self.kind != "multiclass" else entropy(t["logits"])[:, None]
                    extra = extra - self.params.entropy_weight * masked_mean(h, t["mask"])
        for m in self.modalities:
            self.log_value(f"coef[{m}]", self.coefficients[m])
            self.log_value(f"score[{m}]", scores[m])
        return base + extra.to(base.dtype)
