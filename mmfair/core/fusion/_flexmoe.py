"""``flexmoe``: Flex-MoE — modality patch tokens, learned missing embeddings and a sparse mixture of experts
with one router per modality combination.

Paper: Yun et al. (S. Yun, I. Choi, J. Peng, Y. Wu, J. Bao, Q. Zhang, J. Xin, Q. Long, T. Chen),
"Flex-MoE: Modeling Arbitrary Modality Combination via the Flexible Mixture-of-Experts", NeurIPS 2024
(arXiv 2410.08245). Each modality's encoder output is expanded into patch tokens; a missing modality's
tokens are filled from a learned "missing modality bank"; a Transformer whose feed-forward layers are
sparse mixtures of experts (noisy top-k gating, Shazeer et al. 2017) fuses the tokens; samples with all
modalities go through a generalised router (G-Router) and samples with a missing-modality combination
through a specialised router (S-Router); a load-balancing gate loss (importance and load, squared
coefficient of variation) is added to the task loss with weight ``gate_loss_weight``.

Mechanism as implemented:
* encoders: the configured EHR encoder (``--ehr-encoder``) and the CXR embedding MLP, each → [B, H];
* patches: a linear map per modality expands its vector into ``patches`` tokens of width H, plus a
  learned modality embedding;
* absent CXR, per sample: the CXR tokens are replaced (``torch.where`` on ``present``, the placeholder is
  never read) by a learned missing embedding of ``patches`` tokens;
* one pre-norm Transformer layer: multi-head self-attention over the 2·``patches`` tokens, then a
  sparse MoE feed-forward: ``experts`` two-layer GELU MLPs (H → 2H → H); a router per modality
  combination, ``{ehr}`` and ``{ehr, cxr}``, chosen per stay by its CXR presence; each token goes to
  its ``top_k`` highest-scoring experts with weights = softmax over those k scores (the others get exact
  zero weight); Gaussian gating noise with a learned, input-dependent scale during training only;
* gate loss (aux loss ``gate``): for each router, over the tokens it routed, cv²(importance) + cv²(load)
  (importance = sum of gate weights per expert; load = the smooth probability-of-being-in-the-top-k
  estimate while training, token counts at eval); summed over the routers that routed any token, times
  ``gate_loss_weight``;
* readout: mean over all tokens → LayerNorm → Dropout → linear head (logits).

Batch independence: every token is routed on its own and every expert's output is computed for it (the
result equals dispatching it to its k experts), so there is no expert capacity and no token dropping
across the batch; at eval there is no gating noise, so a stay's prediction does not depend on its batch.

Deviations:
* input mode: cached CXR embeddings from a frozen backbone (an MLP here), not a ResNet trained end to
  end (in image mode, ``spec.cxr_image``, the base class supplies the feature of a backbone fine-tuned
  end to end instead, and the MLP follows it); the EHR encoder is this benchmark's configured one, not
  Flex-MoE's per-modality encoders;
* ``spec.missing_token`` is not honoured (``accepts_missing_token`` False): the learned missing
  embedding is part of the method itself and is always used;
* sizes: ``patches`` 4 tokens per modality (CareBench: 16 of 256), ``experts`` 4, ``top_k`` 2, one
  MoE Transformer layer, width ``hidden_dim`` (64);
* the gate-loss weight is **constant** (the paper's and the official code's ``gate_loss_weight``,
  default 0.01), not CareBench's λ·(1 − 0.5·progress): the model is not told the training progress;
* the S-Router's expert-index supervision (a cross-entropy that pins each missing-modality combination
  to its own expert) is not implemented; our two combinations each have their own router, trained by
  the task and gate losses only. The missing-modality bank is one learned embedding per absent CXR
  (with two modalities, {ehr} is the only incomplete combination), not a bank over many combinations;
* the paper's sorting of training samples by modality count (full-modality samples first) is not done;
* experts are evaluated densely and combined with the sparse top-k weights (no FastMoE/CUDA kernels):
  numerically the same output as dispatching, ``experts``/``top_k`` times the compute — small at these sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder
from mmfair.core.registry import FUSIONS

COMBINATIONS = ("ehr", "ehr_cxr")  # router names; index 1 = the CXR is present


def squared_coefficient_of_variation(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """var(x) / mean(x)² over the experts: 0 when balanced (Shazeer et al. 2017's balancing term)."""
    return x.float().var(correction=0) / (x.float().mean() ** 2 + eps)


class ExpertBank(nn.Module):
    """``n`` two-layer GELU MLPs stored as batched weights; returns every expert's output [N, E, H]."""

    def __init__(self, n: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.randn(n, dim, hidden) * dim ** -0.5)
        self.b_in = nn.Parameter(torch.zeros(n, hidden))
        self.w_out = nn.Parameter(torch.randn(n, hidden, dim) * hidden ** -0.5)
        self.b_out = nn.Parameter(torch.zeros(n, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(torch.einsum("nd,edh->neh", x, self.w_in) + self.b_in)
        return torch.einsum("neh,ehd->ned", hidden, self.w_out) + self.b_out


class NoisyTopKRouter(nn.Module):
    """Shazeer-style noisy top-k gate: clean logits x·W_g, noise scale softplus(x·W_n) (training only)."""

    def __init__(self, dim: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.w_gate = nn.Linear(dim, experts, bias=False)
        self.w_noise = nn.Linear(dim, experts, bias=False)
        nn.init.zeros_(self.w_noise.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy logits [N, E], load [N, E]: each token's probability of each expert being in its top-k)."""
        clean = self.w_gate(x)
        if not self.training:
            return clean, clean.new_zeros(())
        noise_std = F.softplus(self.w_noise(x)) + 1e-2
        noisy = clean + torch.randn_like(clean) * noise_std
        experts = clean.shape[1]
        if self.top_k >= experts:
            return noisy, torch.ones_like(clean)
        # smooth load (Shazeer et al. 2017): the probability, under fresh noise, that an expert stays in
        # (or enters) the top-k, given the other experts' noisy logits
        top = noisy.topk(self.top_k + 1, dim=1).values
        threshold_if_in = top[:, self.top_k : self.top_k + 1]  # an expert in the top-k must beat the (k+1)-th
        threshold_if_out = top[:, self.top_k - 1 : self.top_k]  # one outside must beat the k-th
        is_in = noisy > threshold_if_in
        normal = torch.distributions.Normal(torch.zeros((), device=x.device), torch.ones((), device=x.device))
        prob_if_in = normal.cdf((clean - threshold_if_in) / noise_std)
        prob_if_out = normal.cdf((clean - threshold_if_out) / noise_std)
        return noisy, torch.where(is_in, prob_if_in, prob_if_out)


class SparseMoE(nn.Module):
    """Top-k mixture of experts with one router per modality combination, selected per token."""

    def __init__(self, dim: int, experts: int, top_k: int, dropout: float) -> None:
        super().__init__()
        self.top_k = top_k
        self.experts = ExpertBank(experts, dim, 2 * dim)
        self.routers = nn.ModuleDict({c: NoisyTopKRouter(dim, experts, top_k) for c in COMBINATIONS})
        self.dropout = nn.Dropout(dropout)

    def route(self, x: torch.Tensor, combination: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate weights [N, E] (k non-zero per token, summing to 1) and the gate loss (scalar)."""
        logits, loads = [], []
        for c in COMBINATIONS:
            router_logits, router_load = self.routers[c](x)
            logits.append(router_logits)
            loads.append(router_load)
        chosen = combination.long()
        noisy = torch.where(chosen[:, None] == 1, logits[1], logits[0])
        top_values, top_indices = noisy.topk(self.top_k, dim=1)
        # gates in fp32 whatever autocast made of the logits (CUDA autocast: half logits, fp32 softmax)
        weights = torch.softmax(top_values.float(), dim=1).float()
        gates = torch.zeros_like(noisy, dtype=torch.float32).scatter(1, top_indices, weights)
        gate_loss = x.new_zeros((), dtype=torch.float32)
        for index, c in enumerate(COMBINATIONS):
            routed = chosen == index
            if not bool(routed.any()):
                continue
            importance = gates[routed].sum(dim=0)
            load = loads[index][routed].sum(dim=0) if self.training else (gates[routed] > 0).float().sum(dim=0)
            gate_loss = gate_loss + squared_coefficient_of_variation(importance)
            gate_loss = gate_loss + squared_coefficient_of_variation(load)
        return gates, gate_loss

    def forward(self, x: torch.Tensor, combination: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, L, H], ``combination`` [B] (0 = {ehr}, 1 = {ehr, cxr}) → ([B, L, H], gate loss)."""
        flat = x.reshape(-1, x.shape[-1])
        per_token = combination[:, None].expand(x.shape[0], x.shape[1]).reshape(-1)
        gates, gate_loss = self.route(flat, per_token)
        mixed = torch.einsum("ne,ned->nd", gates.to(flat.dtype), self.experts(flat))
        return self.dropout(mixed).reshape(x.shape), gate_loss


class FlexMoEFusion(nn.Module):
    def __init__(self, in_dims: dict[str, int], dim: int, patches: int, experts: int, top_k: int,
                 dropout: float) -> None:
        super().__init__()
        self.patches = patches
        self.expand = nn.ModuleDict({m: nn.Linear(d, patches * dim) for m, d in in_dims.items()})
        self.modality_embedding = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.missing_cxr = nn.Parameter(torch.randn(patches, dim) * 0.02)
        heads = 4 if dim % 4 == 0 else 1
        self.norm_attention = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.attention_dropout = nn.Dropout(dropout)
        self.norm_moe = nn.LayerNorm(dim)
        self.moe = SparseMoE(dim, experts, top_k, dropout)
        self.norm = nn.LayerNorm(dim)

    def patch_tokens(self, ehr: torch.Tensor, cxr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        batch = ehr.shape[0]
        ehr_tokens = self.expand["ehr"](ehr).reshape(batch, self.patches, -1) + self.modality_embedding[0]
        cxr_tokens = self.expand["cxr"](cxr).reshape(batch, self.patches, -1) + self.modality_embedding[1]
        missing = self.missing_cxr.to(cxr_tokens.dtype).expand_as(cxr_tokens)
        cxr_tokens = torch.where(present[:, None, None], cxr_tokens, missing)
        return torch.cat([ehr_tokens, cxr_tokens], dim=1)

    def forward(self, ehr: torch.Tensor, cxr: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_tokens(ehr, cxr, present)
        normed = self.norm_attention(x)
        attended, _ = self.attention(normed, normed, normed, need_weights=False)
        x = x + self.attention_dropout(attended)
        mixed, gate_loss = self.moe(self.norm_moe(x), present.long())
        x = x + mixed
        return self.norm(x.mean(dim=1)), gate_loss


@FUSIONS.register(
    "flexmoe",
    summary="Flex-MoE: patch tokens, learned missing-CXR embedding, top-k MoE with a router per modality combination",
    paper="Yun et al. 2024 (NeurIPS, arXiv 2410.08245)",
)
class FlexMoE(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True

    class Params(FusionParams):
        experts: int = Field(4, ge=2, le=16, description="experts in the MoE feed-forward")
        top_k: int = Field(2, ge=1, le=8, description="experts each token is sent to")
        patches: int = Field(4, ge=1, le=16, description="tokens each modality's vector is expanded into")
        gate_loss_weight: float = Field(0.01, ge=0.0, le=1.0, description="weight of the load-balancing gate loss")

        @model_validator(mode="after")
        def _top_k_within_experts(self):
            if self.top_k > self.experts:
                raise ValueError(f"top_k ({self.top_k}) must not exceed experts ({self.experts})")
            return self

    # the tuning search space (mmfair study): Params field -> ("log"|"float"|"int", low, high) or ("choice", [values])
    search_space = {"experts": ("choice", [4, 8, 16]), "top_k": ("choice", [1, 2]), "gate_loss_weight": ("log", 0.001, 0.1)}

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        in_dims = {m: self.encoders[m].out_dim for m in self.modalities}
        self.fusion = FlexMoEFusion(in_dims, spec.hidden_dim, p.patches, p.experts, p.top_k, spec.dropout)
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(spec.hidden_dim, spec.n_outputs))

    def forward(self, batch: Batch) -> Output:
        present = batch["present"]["cxr"].bool()
        cxr_input = batch["inputs"]["cxr"]
        zero = torch.zeros((), dtype=cxr_input.dtype, device=cxr_input.device)
        safe_cxr = torch.where(present[:, None], cxr_input, zero)
        embeddings = {"ehr": self.encoders["ehr"](batch["inputs"]["ehr"]), "cxr": self.encoders["cxr"](safe_cxr)}
        pooled, gate_loss = self.fusion(embeddings["ehr"], embeddings["cxr"], present)
        return Output(logits=self.head(pooled), embeddings=embeddings,
                      aux_losses={"gate": self.params.gate_loss_weight * gate_loss})
