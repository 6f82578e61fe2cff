"""``umse``: UMSE — a unified embedding of the observed EHR entries, a CXR token, and bottleneck fusion with
modality-aware attention that skips the bottleneck of an absent modality.

Paper: Lee et al. (K. Lee, S. Lee, S. Hahn, H. Hyun, E. Choi, B. Ahn, J. Lee), "Learning Missing Modal
Electronic Health Records with Unified Multi-modal Data Embedding and Modality-Aware Attention", MLHC
2023 (arXiv 2305.02504). UMSE (Unified Multi-modal Set Embedding) embeds every EHR observation as a
(time, feature, value) triplet — no imputation, no carry-forward — and every modality into the same
space with a modality token; MAA (Modality-Aware Attention) with SB (Skip Bottleneck) fuses the
modalities through MBT-style bottleneck tokens (Nagrani et al. 2021): each modality's tokens attend
within their own modality and to the shared bottleneck, the bottleneck is averaged over the modalities'
updates, and a missing modality's update is skipped; the modalities' CLS outputs are combined by a
learned softmax weighting.

Mechanism as implemented:
* EHR (``encoders.ehr``), **observed entries only**: the observed-mask channels (1 = a real observation
  in that hour; 0 = a forward-filled/median-imputed value) select the triplets. Each observed triplet
  (t, f, v) is embedded as feature_embedding[f] + v·value_weight[f]; the triplets of the same hour are
  averaged into one token per hour, plus a sinusoidal embedding of t and a modality embedding, then
  Linear → GELU → LayerNorm. An hour with no observation is removed from attention with the key-padding
  mask, and an unobserved value is replaced by 0 with ``torch.where`` before it is embedded, so it can
  never change the output. (CareBench kept the entries with mask ≠ 0 under an inverted convention, i.e.
  the imputed values — the defect in carebench.md §1.4/§3 item 13; here mask 1 = observed = kept.)
* CXR (``encoders.cxr``): the cached embedding through the CXR embedding MLP → one token, plus the CXR
  modality embedding;
* fusion (``fusion``): per modality a learned CLS token is prepended and ``bottlenecks`` shared
  bottleneck tokens appended; each of ``depth`` layers runs one pre-norm Transformer encoder layer per
  modality (its own weights) over [CLS, tokens, bottleneck], so tokens see only their own modality and
  the bottleneck (modality-aware attention). The new bottleneck is the mean of the updated bottlenecks
  of the modalities **present** for that stay (SB): ``torch.where(cxr_present, (b_ehr + b_cxr)/2,
  b_ehr)`` — present = True means the CXR is used (CareBench passed ``has_cxr`` where "missing" was
  expected, inverting it);
* readout: a learned softmax weighting of the modality CLS outputs over the modalities present (an
  absent CXR gets weight exactly 0, its logit set to −∞), joined with the mean of the final fused
  bottleneck tokens → Dropout → linear head. Reading the fused bottleneck makes the presence-dependent
  bottleneck choice effective already at depth 1 (CareBench used 1 layer, where the choice was
  computed after the last layer and never read: a no-op).

Absent CXR, per sample: the CXR input is replaced by exact zeros with ``torch.where`` before encoding,
the CXR stream's bottleneck update is skipped (SB) and its CLS output gets weight 0, so neither the
placeholder nor the CXR weights can change the stay's prediction (its gradient w.r.t. the CXR input is
exactly zero).

Deviations:
* triplets are aggregated **per hour** (the observed triplets of an hour are averaged into one token,
  unobserved hours key-padded) rather than kept as one token per observation: the same information
  enters (only observed entries), T tokens instead of up to T·F keep it fast on CPU; within-hour
  observation times are not available (the store bins hourly, last observation wins);
* the value embedding is a per-feature linear map of the scaled value (UMSE's value embedding is its
  own design, not reproduced exactly); the time embedding is the fixed sinusoidal one of the hour index;
* input mode: the CXR is one token from the cached embedding of a frozen backbone, not UMSE's/CareBench's
  patch embedding of the image trained from scratch (in image mode, ``spec.cxr_image``, the feature
  comes from a backbone fine-tuned end to end, still one token); no CXR acquisition-time embedding (the
  batch does not carry the time);
* the readout adds the fused bottleneck to the CLS weighting (see above) — our choice;
* sizes: ``hidden_dim`` (64), ``depth`` 2 layers, ``bottlenecks`` 2 tokens, 4 heads when ``hidden_dim``
  allows, feed-forward 2× (CareBench: 1 layer, 1 bottleneck, 8 heads); no tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import nn

from mmfair.core.encoders.ehr import sinusoidal_positions
from mmfair.core.fusion._base import (
    Batch,
    FusionModel,
    FusionParams,
    FusionSpec,
    Output,
    build_modality_encoder,
    keep_present,
)
from mmfair.core.registry import FUSIONS


class ObservedTripletEmbedding(nn.Module):
    """Observed (hour, feature, value) triplets → one token per hour [B, T, H] and which hours hold any [B, T]."""

    def __init__(self, n_features: int, dim: int, seq_len: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.feature_embedding = nn.Parameter(torch.randn(n_features, dim) * 0.1)
        self.value_weight = nn.Parameter(torch.randn(n_features, dim) * 0.1)
        self.register_buffer("time_embedding", sinusoidal_positions(seq_len, dim), persistent=False)
        self.project = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.out_dim = dim

    def forward(self, ehr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, observed = ehr[..., : self.n_features], ehr[..., self.n_features :] > 0.5
        observed_values = torch.where(observed, values, torch.zeros((), dtype=values.dtype, device=values.device))
        weights = observed.to(values.dtype)
        summed = weights @ self.feature_embedding.to(values.dtype)
        summed = summed + observed_values @ self.value_weight.to(values.dtype)
        counts = weights.sum(dim=-1, keepdim=True)
        per_hour = summed / counts.clamp_min(1.0)
        tokens = self.project(per_hour + self.time_embedding[: ehr.shape[1]].to(values.dtype))
        return tokens, counts[..., 0] > 0


@dataclass
class BottleneckOutput:
    fused: torch.Tensor  # [B, 2H]: weighted CLS ‖ mean fused bottleneck
    cls: dict[str, torch.Tensor]  # per modality [B, H]
    bottleneck: torch.Tensor  # [B, H], mean of the final fused bottleneck tokens
    modality_weights: torch.Tensor  # [B, 2] (ehr, cxr), rows sum to 1, cxr weight 0 when absent


class BottleneckFusion(nn.Module):
    """MBT-style bottleneck fusion with a per-modality layer and the skip bottleneck for an absent CXR."""

    def __init__(self, dim: int, depth: int, bottlenecks: int, dropout: float) -> None:
        super().__init__()
        heads = 4 if dim % 4 == 0 else 1
        self.cls = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in ("ehr", "cxr")})
        self.modality_embedding = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in ("ehr", "cxr")})
        self.bottleneck = nn.Parameter(torch.randn(bottlenecks, dim) * 0.02)
        self.layers = nn.ModuleList([
            nn.ModuleDict({m: nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                                         batch_first=True, norm_first=True) for m in ("ehr", "cxr")})
            for _ in range(depth)
        ])
        self.modality_logits = nn.Parameter(torch.zeros(2))
        self.norm_cls = nn.LayerNorm(dim)
        self.norm_bottleneck = nn.LayerNorm(dim)

    def forward(self, ehr_tokens: torch.Tensor, ehr_observed: torch.Tensor, cxr_feature: torch.Tensor,
                cxr_present: torch.Tensor) -> BottleneckOutput:
        batch, dtype = ehr_tokens.shape[0], ehr_tokens.dtype
        n_bottleneck = self.bottleneck.shape[0]

        def with_cls(m: str, tokens: torch.Tensor) -> torch.Tensor:
            cls = self.cls[m].to(dtype).expand(batch, 1, -1)
            return torch.cat([cls, tokens + self.modality_embedding[m].to(dtype)], dim=1)

        ehr_seq = with_cls("ehr", ehr_tokens)
        cxr_seq = with_cls("cxr", cxr_feature[:, None, :])
        always = torch.ones(batch, 1, dtype=torch.bool, device=ehr_tokens.device)
        # key padding: True = ignored. CLS and bottleneck are always attendable, unobserved hours never.
        ehr_padding = ~torch.cat([always, ehr_observed, always.expand(batch, n_bottleneck)], dim=1)
        shared = self.bottleneck.to(dtype).expand(batch, -1, -1)
        has_cxr = cxr_present[:, None, None]
        for layer in self.layers:
            ehr_out = layer["ehr"](torch.cat([ehr_seq, shared], dim=1), src_key_padding_mask=ehr_padding)
            cxr_out = layer["cxr"](torch.cat([cxr_seq, shared], dim=1))
            ehr_seq, ehr_bottleneck = ehr_out[:, :-n_bottleneck], ehr_out[:, -n_bottleneck:]
            cxr_seq, cxr_bottleneck = cxr_out[:, :-n_bottleneck], cxr_out[:, -n_bottleneck:]
            # skip bottleneck: an absent CXR's update never reaches the shared tokens
            shared = torch.where(has_cxr, (ehr_bottleneck + cxr_bottleneck) / 2, ehr_bottleneck)
        cls = {"ehr": self.norm_cls(ehr_seq[:, 0]), "cxr": keep_present(self.norm_cls(cxr_seq[:, 0]), cxr_present)}
        present = torch.stack([torch.ones_like(cxr_present), cxr_present], dim=1)
        never = torch.tensor(float("-inf"), dtype=dtype, device=present.device)
        logits = torch.where(present, self.modality_logits.to(dtype), never)
        weights = torch.softmax(logits, dim=1)
        weighted_cls = weights[:, :1] * cls["ehr"] + torch.where(cxr_present[:, None], weights[:, 1:] * cls["cxr"], 0.0)
        bottleneck = self.norm_bottleneck(shared.mean(dim=1))
        return BottleneckOutput(torch.cat([weighted_cls, bottleneck], dim=1), cls, bottleneck, weights)


@FUSIONS.register(
    "umse",
    summary="UMSE: observed-triplet EHR embedding, CXR token, bottleneck fusion skipping an absent CXR, weighted CLS",
    paper="Lee et al. 2023 (MLHC, arXiv 2305.02504)",
)
class UMSE(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True

    class Params(FusionParams):
        depth: int = Field(2, ge=1, le=4, description="bottleneck fusion layers")
        bottlenecks: int = Field(2, ge=1, le=8, description="shared bottleneck tokens")

    # the tuning search space (mmfair study): Params field -> ("log"|"float"|"int", low, high) or ("choice", [values])
    search_space = {"depth": ("int", 1, 4), "bottlenecks": ("choice", [1, 2, 4])}

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        self.encoders = nn.ModuleDict({
            "ehr": ObservedTripletEmbedding(spec.n_features, spec.hidden_dim, spec.seq_len),
            "cxr": build_modality_encoder("cxr", spec),
        })
        self.fusion = BottleneckFusion(spec.hidden_dim, p.depth, p.bottlenecks, spec.dropout)
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(2 * spec.hidden_dim, spec.n_outputs))

    def fuse(self, batch: Batch) -> BottleneckOutput:
        present = batch["present"]["cxr"].bool()
        cxr_input = batch["inputs"]["cxr"]
        zero = torch.zeros((), dtype=cxr_input.dtype, device=cxr_input.device)
        safe_cxr = torch.where(present[:, None], cxr_input, zero)
        ehr_tokens, ehr_observed = self.encoders["ehr"](batch["inputs"]["ehr"])
        return self.fusion(ehr_tokens, ehr_observed, self.encoders["cxr"](safe_cxr), present)

    def forward(self, batch: Batch) -> Output:
        fused = self.fuse(batch)
        return Output(logits=self.head(fused.fused), embeddings=dict(fused.cls))
