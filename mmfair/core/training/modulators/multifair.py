"""``multifair``: dual-level (modality and group) gradient modulation for fair multimodal classification.

Paper: Zubair, Zheng, Nussdorf, Armstrong, Shen, Wilson, Tian, Zhu & Shi (Zubair et al.), "MultiFair:
Multimodal Balanced Fairness-Aware Medical Classification with Dual-Level Gradient Modulation",
arXiv 2510.07328 (2025; IEEE TMI per the authors). The full text could not be read; the mechanism is
reconstructed from the abstract and the authors' released code as laid out in
``reference/multifair.md`` (§2, §4). Built on CGGM (Guo et al., NeurIPS 2024).

Per training step (one forward, one full backward):

1. **Auxiliary heads** ψ_m (Linear → ReLU → Linear, one per modality) on the *detached* embedding h_m
   (``Output.embeddings``), trained on the stays where m is present with their own AdamW; their scores
   s_m feed every statistic below (no gradient reaches the model from them).
2. **Modality magnitude** B_m = 1 − |Δ_m| / (Σ_k |Δ_k| + 1e-8), Δ_m the change of the batch ROC-AUC of
   s_m since the previous batch: the modality whose unimodal AUC moved more is damped.
3. **Modality direction** L_gm = (1/M) Σ_m [|B_m| − B_m cos(vec W_head, vec W_ψm)], W_head the fused
   head's last linear weight, W_ψm the aux head's last weight (detached): CGGM's weight cosine, so it is
   differentiable and reaches only W_head.
4. **Group magnitude**: per modality m and group g an EMA a_{m,g} (decay 0.9) of the batch AUC of s_m in
   g; f_{m,g} = 1 + β (ā_m − a_{m,g}) / τ; F_m = Σ_g p_g f_{m,g} with p_g the batch share of g.
5. **Gate**: open when the fused model's batch AUC differs between groups by more than τ (max − min).
6. **Group direction** L_fair = mean_g |a^f_g − mean a^f|, a^f_g the surrogate (pairwise logistic) AUC of
   the fused scores in g, differentiable.
7. Loss = the method's training loss + λ_gm L_gm + [gate] γ L_fair; after backward every encoder-m
   gradient is multiplied by κ_m = ρ B_m ([gate] ? F_m : 1).

Variants (``variant``):

* ``paper`` (default, the [R] reconstruction of reference §2.4/§4.2): L_gm and L_fair carry gradient;
  any number of groups; exact AUCs for the no-grad statistics; a group or modality whose statistic is
  undefined in the batch (one class, or fewer than ``min_samples`` stays with the modality) is skipped
  (EMA and B unchanged) instead of injecting 0.5; EMAs start at the first observed value; p_g is the
  share among the stays that have modality m (only they send gradient to encoder m); F_m is clamped to
  [``f_min``, ``f_max``] = [0.25, 4]; B is normalised (``rho_normalize``): B̃_m = B_m · M/(M−1), so the
  coefficients average 1 and balanced modalities (equal |Δ|, or no change at all) give B̃ = 1; with
  ρ = 1 (this variant's default) balanced modalities and a single group train exactly as without the
  modulator. The direction term uses B̃ as well.
* ``official-code``: the effective behaviour of the public code — L_gm is a constant 0 and the fairness
  term the float Φ = mean_{m,g} |a_{m,g} − ā_m| (no gradient: the release's dead terms), surrogate AUC of
  probabilities for a_{m,g} with the 0.5 fallback and 0.5 initial values, the previous AUC reused for a
  one-class batch, p_g over the whole batch, a one-class group counting 0.5 in the gate, no clamp,
  ρ = 1.2 on the raw B_m; generalised from the code's two hard-coded groups to K by the same formulas.

Deviations (both variants unless said), stated plainly:
* ρ: the paper's ρ = 1.2 multiplies a raw B whose mean is (M−1)/M (mean scale 0.6 for two modalities);
  the ``paper`` variant normalises B and uses ρ = 1 (``rho=0.6`` reproduces the paper's mean scale);
* the auxiliary heads' hidden width equals the fused head's input width so the weight cosine is
  defined; no dropout in them (it would draw from the model's random stream); their lr is the run's lr
  times 1/3 (the released ratio 1e-5 / 3e-5), weight decay 3e-3 as released;
* the released code runs a second no-grad forward and a wasted extra backward each step; here one
  forward and one backward (the aux heads read the detached embeddings), so compute does not match it;
* multilabel and multiclass tasks use macro AUCs over the labels (one-vs-rest) with both classes;
* the modulation scales every tensor of ``encoder:<m>`` (the projection inside the encoder included);
  the fusion and head are never scaled; under AdamW a constant scale is nearly cancelled (reference §2.3),
  so the effect comes from the coefficients' changes and from gradient clipping; learning-rate
  modulation (reference ``modulate_via=lr``) and the group-projection variant [EXT] are not implemented;
* an absent CXR: CXR statistics use only stays with a CXR; stays without one send no gradient to the
  CXR encoder anyway; a model without ``Output.embeddings`` for a modality is refused.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from mmfair.core.errors import ConfigError
from mmfair.core.registry import MODULATORS
from mmfair.core.training.modulators._base import (
    Groups,
    Modulator,
    ModulatorParams,
    encoder_groups,
    exact_auc,
    label_matrix,
    score_matrix,
    surrogate_auc,
)
from mmfair.core.training.modulators.ogm_ge import embedding_dims, probe_output

_VARIANT_DEFAULTS = {
    "paper": {"rho": 1.0, "rho_normalize": True, "f_min": 0.25, "f_max": 4.0, "min_samples": 16},
    "official-code": {"rho": 1.2, "rho_normalize": False, "f_min": None, "f_max": None, "min_samples": 1},
}


class MultiFairParams(ModulatorParams):
    variant: Literal["paper", "official-code"] = "paper"
    rho: float = Field(1.0, gt=0, description="ρ: overall scale of the encoder coefficients")
    rho_normalize: bool = Field(True, description="normalise B by M/(M-1) so balanced modalities give 1")
    lambda_gm: float = Field(0.15, ge=0, description="λ_gm: weight of the modality-direction loss")
    tau: float = Field(0.04, gt=0, description="τ: gate threshold on the fused group-AUC gap")
    gamma: float = Field(0.5, ge=0, description="γ: weight of the fairness loss when the gate is open")
    beta: float = Field(0.3, ge=0, description="β: strength of the group magnitude factor")
    ema: float = Field(0.9, ge=0, lt=1, description="EMA decay of the per-group AUCs")
    f_min: float | None = Field(0.25, gt=0, description="clamp of F_m (paper variant); None = no clamp")
    f_max: float | None = Field(4.0, gt=0)
    min_samples: int = Field(16, ge=1, description="stays with the modality needed for its batch AUC")
    aux_lr_scale: float = Field(1 / 3, gt=0, description="aux-head lr as a multiple of the run's lr")
    aux_weight_decay: float = Field(3e-3, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            variant = data.get("variant", "paper")
            for key, value in _VARIANT_DEFAULTS.get(variant, {}).items():
                data.setdefault(key, value)
        return data


def modality_coefficients(deltas: dict[str, float], normalize: bool) -> dict[str, float]:
    """B_m = 1 − |Δ_m| / (Σ|Δ| + 1e-8) (∈ [0, 1], Σ B = M − 1); normalised: × M/(M−1), and exactly 1
    each when nothing changed (and without the 1e-8, which only guards that case); a single modality
    gets 1 (the raw formula would give 0)."""
    m = len(deltas)
    if m <= 1:
        return {k: 1.0 for k in deltas}
    total = sum(abs(d) for d in deltas.values())
    if normalize and total == 0:
        return {k: 1.0 for k in deltas}
    if normalize:  # the zero total is handled above, so no 1e-8: balanced changes give exactly 1
        return {k: (1.0 - abs(d) / total) * m / (m - 1) for k, d in deltas.items()}
    return {k: 1.0 - abs(d) / (total + 1e-8) for k, d in deltas.items()}


def group_factor(ema: np.ndarray, shares: np.ndarray, beta: float, tau: float) -> float:
    """F = Σ_g p_g f_g with f_g = 1 + β (mean_g' a_g' − a_g) / max(τ, 1e-4); NaN a_g → f_g = 1."""
    known = ~np.isnan(ema)
    if known.sum() == 0:
        return 1.0
    mean = float(ema[known].mean())
    f = np.where(known, 1.0 + beta * (mean - np.where(known, ema, mean)) / max(tau, 1e-4), 1.0)
    return float((shares * f).sum()) if shares.sum() > 0 else 1.0


def resolve_head_weight(model: Any, n_outputs: int, modulator: str = "multifair") -> nn.Parameter:
    """The fused head's last linear weight [n_outputs, d]; exactly one is required (no silent fallback)."""
    heads = [p for p in model.param_groups().get("head", []) if p.dim() == 2 and p.shape[0] == n_outputs]
    if len(heads) != 1:
        raise ConfigError(
            f"modulator '{modulator}' needs one fused head layer with {n_outputs} outputs in {type(model).__name__}'s "
            f"'head' group, found {len(heads)} (set lambda_gm=0 to run without the direction term)"
        )
    return heads[0]


@MODULATORS.register(
    "multifair",
    summary="MultiFair: modality (CGGM-style) + group (EMA group-AUC) gradient modulation, direction and fairness losses",
    paper="Zubair et al., arXiv 2510.07328 (2025)",
)
class MultiFair(Modulator):
    Params = MultiFairParams
    needs_groups = True
    name = "multifair"

    # ---- setup --------------------------------------------------------------------------------
    def setup(self, model: Any, task: Any, train: Any, config: Any, groups: Groups | None, device: torch.device) -> None:
        super().setup(model, task, train, config, groups, device)
        assert groups is not None
        p = self.params
        self.official = p.variant == "official-code"
        self.task = task
        self.modalities = tuple(model.modalities)
        self.encoders = encoder_groups(model, self.modalities)
        self.group_names = groups.names
        probe = probe_output(model, train)
        dims = embedding_dims(model, probe)
        self.n_outputs = int(probe.logits.shape[1])
        self.head_weight = None
        if not self.official and p.lambda_gm > 0:
            self.head_weight = resolve_head_weight(model, self.n_outputs)
        hidden = int(self.head_weight.shape[1]) if self.head_weight is not None else max(dims.values())
        with torch.random.fork_rng(devices=[]):  # the model's own random stream stays that of plain training
            torch.manual_seed(int(config.seed) + 104729)
            self.aux = nn.ModuleDict({
                m: nn.Sequential(nn.Linear(dims[m], hidden), nn.ReLU(), nn.Linear(hidden, self.n_outputs))
                for m in self.modalities
            })
        self.aux.to(device)
        self.aux_opt = torch.optim.AdamW(self.aux.parameters(), lr=config.lr * p.aux_lr_scale, weight_decay=p.aux_weight_decay)
        start = 0.5 if self.official else float("nan")
        self.prev_auc = {m: start for m in self.modalities}
        self.B = {m: 1.0 if p.rho_normalize else (len(self.modalities) - 1) / max(len(self.modalities), 1)
                  for m in self.modalities}
        if len(self.modalities) == 1:
            self.B = {m: 1.0 for m in self.modalities}
        self.group_ema = np.full((len(self.modalities), groups.n_groups), start)
        self.kappa = {m: p.rho * self.B[m] for m in self.modalities}
        self.gate = False

    # ---- statistics -----------------------------------------------------------------------------
    def _update_modality(self, scores: dict[str, torch.Tensor], Y: torch.Tensor, present: dict[str, torch.Tensor]) -> None:
        p = self.params
        auc = {}
        for m in self.modalities:
            rows = present[m].bool()
            auc[m] = exact_auc(Y[rows], scores[m][rows]) if int(rows.sum()) >= p.min_samples else float("nan")
        if self.official:
            auc = {m: self.prev_auc[m] if math.isnan(a) else a for m, a in auc.items()}
            deltas = {m: auc[m] - self.prev_auc[m] for m in self.modalities}
            self.B = modality_coefficients(deltas, p.rho_normalize)
            self.prev_auc = auc
            return
        stale = any(math.isnan(auc[m]) or math.isnan(self.prev_auc[m]) for m in self.modalities)
        if not stale:
            deltas = {m: auc[m] - self.prev_auc[m] for m in self.modalities}
            self.B = modality_coefficients(deltas, p.rho_normalize)
        else:
            self.log_value("stale_modality_steps", 1.0)
        self.prev_auc = {m: self.prev_auc[m] if math.isnan(auc[m]) else auc[m] for m in self.modalities}

    def _update_groups(self, scores: dict[str, torch.Tensor], probs: dict[str, torch.Tensor], Y: torch.Tensor,
                       present: dict[str, torch.Tensor], groups: torch.Tensor) -> dict[str, float]:
        p = self.params
        k = len(self.group_names)
        factors = {}
        for i, m in enumerate(self.modalities):
            rows_m = present[m].bool()
            for g in range(k):
                rows = rows_m & (groups == g)
                if self.official:
                    value = None
                    if int(rows.sum()) >= 2:
                        sur = surrogate_auc(Y[rows], probs[m][rows])
                        value = None if sur is None else float(sur)
                    value = 0.5 if value is None else value
                    self.group_ema[i, g] = p.ema * self.group_ema[i, g] + (1 - p.ema) * value
                else:
                    value = exact_auc(Y[rows], scores[m][rows]) if int(rows.sum()) >= 2 else float("nan")
                    if math.isnan(value):
                        continue
                    old = self.group_ema[i, g]
                    self.group_ema[i, g] = value if math.isnan(old) else p.ema * old + (1 - p.ema) * value
            base = torch.ones_like(groups, dtype=torch.bool) if self.official else rows_m
            counts = torch.bincount(groups[base], minlength=k).double().cpu().numpy()
            shares = counts / max(counts.sum(), 1.0)
            factor = group_factor(self.group_ema[i], shares, p.beta, p.tau)
            if not self.official and p.f_min is not None:
                factor = max(factor, p.f_min)
            if not self.official and p.f_max is not None:
                factor = min(factor, p.f_max)
            factors[m] = factor
        return factors

    def _gate(self, fused: torch.Tensor, Y: torch.Tensor, scorable: torch.Tensor, groups: torch.Tensor) -> bool:
        aucs = []
        for g in range(len(self.group_names)):
            rows = scorable & (groups == g)
            if int(rows.sum()) < 2:
                continue
            value = exact_auc(Y[rows], fused[rows])
            if math.isnan(value):
                if self.official:
                    aucs.append(0.5)
                continue
            aucs.append(value)
        return len(aucs) >= 2 and (max(aucs) - min(aucs)) > self.params.tau

    def fairness_loss(self, fused_scores: torch.Tensor, Y: torch.Tensor, scorable: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """mean_g |a^f_g − mean a^f| over groups with both classes (differentiable); 0 with < 2 groups."""
        values = []
        for g in range(len(self.group_names)):
            rows = scorable & (groups == g)
            a = surrogate_auc(Y[rows], fused_scores[rows])
            if a is not None:
                values.append(a)
        if len(values) < 2:
            return fused_scores.sum() * 0.0
        stacked = torch.stack(values)
        return (stacked - stacked.mean()).abs().mean()

    def direction_loss(self) -> torch.Tensor:
        """L_gm = (1/M) Σ_m [|B_m| − B_m cos(vec W_head, vec W_ψm)], W_ψm detached: reaches W_head only."""
        assert self.head_weight is not None
        w = self.head_weight.float().reshape(-1)
        terms = []
        for m in self.modalities:
            w_aux = self.aux[m][-1].weight.detach().float().reshape(-1)
            cos = torch.nn.functional.cosine_similarity(w, w_aux, dim=0)
            terms.append(abs(self.B[m]) - self.B[m] * cos)
        return torch.stack(terms).mean()

    # ---- hooks ----------------------------------------------------------------------------------
    def loss(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        p = self.params
        base = model.training_loss(output, batch, task)
        missing = [m for m in self.modalities if m not in output.embeddings]
        if missing:
            raise ConfigError(f"modulator 'multifair' needs Output.embeddings for {', '.join(missing)}")
        present, labels, groups = batch["present"], batch["labels"], batch["groups"]
        Y = label_matrix(task, labels, self.n_outputs)
        with torch.autocast(device_type=output.logits.device.type, enabled=False):
            aux_logits = {m: self.aux[m](output.embeddings[m].detach().float()) for m in self.modalities}
            aux_loss = sum(task.loss(aux_logits[m], labels, present[m]) for m in self.modalities)
            self.aux_opt.zero_grad(set_to_none=True)
            aux_loss.backward()
            self.aux_opt.step()
        with torch.no_grad():
            scores = {m: score_matrix(task, z.detach()) for m, z in aux_logits.items()}
            probs = {m: task.probabilities(z.detach()) for m, z in aux_logits.items()}
            self._update_modality(scores, Y, present)
            factors = self._update_groups(scores, probs, Y, present, groups)
            scorable = model.scorable(present).bool()
            self.gate = self._gate(score_matrix(task, output.logits.detach()), Y, scorable, groups)
        self.kappa = {m: p.rho * self.B[m] * (factors[m] if self.gate else 1.0) for m in self.modalities}
        for m in self.modalities:
            self.log_value(f"B[{m}]", self.B[m])
            self.log_value(f"F[{m}]", factors[m])
            self.log_value(f"kappa[{m}]", self.kappa[m])
        self.log_value("gate_open", float(self.gate))
        loss = base
        if self.official:
            known = ~np.isnan(self.group_ema)
            phi = float(np.nanmean(np.abs(self.group_ema - np.nanmean(self.group_ema, axis=1, keepdims=True)))) if known.any() else 0.0
            if self.gate:  # a float in the released code: it moves the loss value, never a gradient
                loss = loss + p.gamma * phi
            return loss
        if p.lambda_gm > 0:
            loss = loss + p.lambda_gm * self.direction_loss()
        if self.gate and p.gamma > 0:
            with torch.autocast(device_type=output.logits.device.type, enabled=False):
                loss = loss + p.gamma * self.fairness_loss(score_matrix(task, output.logits.float()), Y, scorable, groups)
        return loss

    @torch.no_grad()
    def after_backward(self, model: Any, output: Any, batch: dict[str, Any]) -> None:
        for m, params in self.encoders.items():
            k = self.kappa[m]
            if k == 1.0:
                continue
            for prm in params:
                if prm.grad is not None:
                    prm.grad.mul_(k)

    def state_dict(self) -> dict[str, Any]:
        return {
            "aux": self.aux.state_dict(),
            "aux_opt": self.aux_opt.state_dict(),
            "prev_auc": torch.tensor([self.prev_auc[m] for m in self.modalities], dtype=torch.float64),
            "B": torch.tensor([self.B[m] for m in self.modalities], dtype=torch.float64),
            "group_ema": torch.from_numpy(self.group_ema.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.aux.load_state_dict(state["aux"])
        self.aux_opt.load_state_dict(state["aux_opt"])
        self.prev_auc = {m: float(v) for m, v in zip(self.modalities, state["prev_auc"].tolist())}
        self.B = {m: float(v) for m, v in zip(self.modalities, state["B"].tolist())}
        self.group_ema = state["group_ema"].numpy().copy()
