"""``healnet``: HEALNet — a latent array that iteratively cross-attends to each modality's raw tokens.

Paper: Hemker et al. (K. Hemker, N. Simidjievski, M. Jamnik), "HEALNet: Multimodal Fusion for
Heterogeneous Biomedical Data", NeurIPS 2024 (arXiv 2311.09115). Hybrid early fusion in the Perceiver
style: a shared latent array (the fused state) is updated, modality after modality, by cross-attention
from the latents (queries) to that modality's tokens (keys/values, kept in their near-raw form, with a
Fourier positional encoding), then refined by self-attention over the latents; the same block weights
are reused at every step of depth; feed-forward layers are self-normalising (SELU + alpha-dropout);
the prediction is a linear head on the mean of the final latents. A modality that is absent is
skipped: its cross-attention update is not applied.

Mechanism as implemented:
* latent array: ``n_latents`` learned vectors of width ``hidden_dim``;
* EHR tokens: the T hourly steps, each its 2F raw channels (scaled values ‖ observed mask) joined with
  a Fourier encoding of the step's position in [−1, 1] (``fourier_bands`` sin/cos pairs with
  frequencies 1 … ``max_freq``/2, plus the position itself), LayerNorm'ed (``encoders.ehr``);
* CXR tokens (``encoders.cxr``): the cached D-dim embedding zero-padded to a multiple of ``cxr_tokens``
  and cut into ``cxr_tokens`` contiguous chunks, each plus a learned per-chunk embedding, LayerNorm'ed;
* one step of depth = for each modality (EHR, then CXR): latents ← latents + CrossAttn(latents,
  tokens), latents ← latents + SNN-FF(latents); then latents ← latents + SelfAttn(latents),
  latents ← latents + SNN-FF(latents). Every attention/FF is pre-norm; each modality has its own
  cross-attention and FF weights; all ``depth`` steps share one set of weights (HEALNet's weight tying);
* readout: mean over latents → LayerNorm → linear head (logits).

Absent CXR, per sample: the CXR tokens are built from exact zeros where ``present`` is False
(``torch.where``, so no placeholder value is read) and the whole CXR update (cross-attention and its
FF) is discarded for that stay with ``torch.where`` on the latent update, so a stay without a CXR gets
exactly the computation of the EHR-only path. CareBench's defect (§3 item 10: the skip applied only
when the whole batch lacked the modality; a single stay without a CXR was attended as a zeros image)
is avoided.

Deviations:
* input mode: cached CXR embeddings from a frozen backbone, not raw pixels. HEALNet attends over the
  raw image (patches or pixels; CareBench over 50,176 pixel tokens); with one cached vector per image
  there are no patches, so the vector is split into ``cxr_tokens`` chunks with a learned per-chunk
  embedding in place of the image's Fourier encoding. This is our substitute, not the paper's. In
  image mode (``spec.cxr_image``) the base class turns the image into the backbone's D-dim feature,
  fine-tuned end to end, before this method runs: the same chunking applies to that feature, so the
  method still never attends over pixels or patches;
* sizes: ``hidden_dim`` (64) latents, ``n_latents`` 8, 2 heads of ``hidden_dim // heads``, depth 2,
  2 Fourier bands up to frequency 10 (the paper/CareBench: 256 latents of 256, 4 heads of 64);
* one self-attention block per step (HEALNet's ``self_per_cross_attn`` = 1); all steps tie weights
  (including the first; HEALNet can leave the first step untied);
* the paper's L1 regularisation of the weights is not added (AdamW weight decay applies instead);
* no tuning: defaults chosen for CPU speed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, model_validator
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output
from mmfair.core.registry import FUSIONS


def fourier_position_features(seq_len: int, bands: int, max_freq: float) -> torch.Tensor:
    """[T, 2·bands + 1]: sin/cos(π·f·p) for ``bands`` frequencies f in [1, max_freq/2], and p in [−1, 1]."""
    position = torch.linspace(-1.0, 1.0, seq_len)[:, None]
    frequencies = torch.linspace(1.0, max(max_freq / 2, 1.0), bands)[None, :]
    angles = math.pi * position * frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles), position], dim=1)


class EHRStepTokens(nn.Module):
    """The T hourly steps as tokens: raw 2F channels ‖ Fourier position features, LayerNorm'ed."""

    def __init__(self, n_features: int, seq_len: int, bands: int, max_freq: float) -> None:
        super().__init__()
        self.register_buffer("positions", fourier_position_features(seq_len, bands, max_freq), persistent=False)
        self.token_dim = 2 * n_features + self.positions.shape[1]
        self.norm = nn.LayerNorm(self.token_dim)

    def forward(self, ehr: torch.Tensor) -> torch.Tensor:
        steps = ehr.shape[1]
        positions = self.positions[:steps].to(ehr.dtype).expand(ehr.shape[0], steps, -1)
        return self.norm(torch.cat([ehr, positions], dim=-1))


class CXRChunkTokens(nn.Module):
    """The cached embedding cut into ``n_tokens`` chunks (zero-padded) plus a learned per-chunk embedding."""

    def __init__(self, cxr_dim: int, n_tokens: int) -> None:
        super().__init__()
        if cxr_dim <= 0:
            raise ValueError("healnet needs CXR embeddings, but the store holds none (cxr_dim = 0)")
        self.n_tokens = min(n_tokens, cxr_dim)
        self.token_dim = math.ceil(cxr_dim / self.n_tokens)
        self.padding = self.n_tokens * self.token_dim - cxr_dim
        self.chunk_embedding = nn.Parameter(torch.randn(self.n_tokens, self.token_dim) * 0.02)
        self.norm = nn.LayerNorm(self.token_dim)

    def forward(self, cxr: torch.Tensor) -> torch.Tensor:
        padded = F.pad(cxr, (0, self.padding))
        chunks = padded.reshape(cxr.shape[0], self.n_tokens, self.token_dim)
        return self.norm(chunks + self.chunk_embedding.to(cxr.dtype))


class LatentAttention(nn.Module):
    """Pre-norm multi-head attention from the latents to a context (the latents themselves if None)."""

    def __init__(self, dim: int, context_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm_latents = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim, bias=False)
        self.key_value = nn.Linear(context_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, latents: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        normed = self.norm_latents(latents)
        source = normed if context is None else context  # the context is normalised by its tokeniser
        keys, values = self.key_value(source).chunk(2, dim=-1)
        attended = F.scaled_dot_product_attention(
            self._split(self.query(normed)), self._split(keys), self._split(values),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(attended.transpose(1, 2).reshape(latents.shape))


class SelfNormalisingFeedForward(nn.Module):
    """Pre-norm Linear → SELU → AlphaDropout → Linear (HEALNet's SNN feed-forward)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.SELU(), nn.AlphaDropout(dropout),
                                 nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HEALNetFusion(nn.Module):
    """The latent array and the weight-tied step: per-modality cross-attention + FF, latent self-attention + FF."""

    def __init__(self, dim: int, token_dims: dict[str, int], n_latents: int, heads: int, depth: int,
                 dropout: float) -> None:
        super().__init__()
        self.depth = depth
        self.latents = nn.Parameter(torch.randn(n_latents, dim) * 0.02)
        self.cross = nn.ModuleDict({m: LatentAttention(dim, d, heads, dropout) for m, d in token_dims.items()})
        self.cross_ff = nn.ModuleDict({m: SelfNormalisingFeedForward(dim, dropout) for m in token_dims})
        self.self_attention = LatentAttention(dim, dim, heads, dropout)
        self.self_ff = SelfNormalisingFeedForward(dim, dropout)
        self.norm = nn.LayerNorm(dim)

    def _modality_update(self, modality: str, latents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        latents = latents + self.cross[modality](latents, tokens)
        return latents + self.cross_ff[modality](latents)

    def forward(self, ehr_tokens: torch.Tensor, cxr_tokens: torch.Tensor | None = None,
                cxr_present: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled latents [B, H]. ``cxr_tokens`` None runs the EHR-only path; otherwise each stay's CXR
        update is kept only where ``cxr_present`` is True."""
        latents = self.latents.to(ehr_tokens.dtype).expand(ehr_tokens.shape[0], -1, -1)
        for _ in range(self.depth):
            latents = self._modality_update("ehr", latents, ehr_tokens)
            if cxr_tokens is not None:
                updated = self._modality_update("cxr", latents, cxr_tokens)
                latents = torch.where(cxr_present[:, None, None], updated, latents)
            latents = latents + self.self_attention(latents)
            latents = latents + self.self_ff(latents)
        return self.norm(latents.mean(dim=1))


@FUSIONS.register(
    "healnet",
    summary="HEALNet: weight-tied latent array cross-attending to EHR steps and CXR chunks (skipped per stay "
    "without a CXR)",
    paper="Hemker et al. 2024 (NeurIPS, arXiv 2311.09115)",
)
class HEALNet(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True

    class Params(FusionParams):
        depth: int = Field(2, ge=1, le=3, description="weight-tied fusion steps")
        n_latents: int = Field(8, ge=1, le=64, description="latent array length")
        heads: int = Field(2, ge=1, le=4, description="attention heads (must divide hidden_dim)")
        fourier_bands: int = Field(2, ge=1, le=8, description="Fourier frequency bands of the EHR time position")
        max_freq: float = Field(10.0, ge=1.0, le=100.0, description="highest Fourier frequency ×2")
        cxr_tokens: int = Field(4, ge=1, le=64, description="chunks the cached CXR embedding is cut into")

        @model_validator(mode="after")
        def _heads_divide_hidden_dim(self, info: ValidationInfo):
            hidden_dim = (info.context or {}).get("hidden_dim")  # given when a run's config is resolved
            if hidden_dim is not None and hidden_dim % self.heads:
                raise ValueError(f"heads ({self.heads}) must divide hidden_dim ({hidden_dim})")
            return self

    # the tuning search space (mmfair study): Params field -> ("log"|"float"|"int", low, high) or ("choice", [values])
    search_space = {"depth": ("int", 1, 3), "fourier_bands": ("choice", [1, 2, 4]), "max_freq": ("choice", [5.0, 10.0])}

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        if spec.hidden_dim % p.heads:
            raise ValueError(f"healnet: heads ({p.heads}) must divide hidden_dim ({spec.hidden_dim})")
        ehr = EHRStepTokens(spec.n_features, spec.seq_len, p.fourier_bands, p.max_freq)
        cxr = CXRChunkTokens(spec.cxr_dim, p.cxr_tokens)
        self.encoders = nn.ModuleDict({"ehr": ehr, "cxr": cxr})
        self.fusion = HEALNetFusion(spec.hidden_dim, {"ehr": ehr.token_dim, "cxr": cxr.token_dim}, p.n_latents,
                                    p.heads, p.depth, spec.dropout)
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(spec.hidden_dim, spec.n_outputs))

    def tokens(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        present = batch["present"]["cxr"].bool()
        cxr = batch["inputs"]["cxr"]
        zero = torch.zeros((), dtype=cxr.dtype, device=cxr.device)
        safe_cxr = torch.where(present[:, None], cxr, zero)
        return self.encoders["ehr"](batch["inputs"]["ehr"]), self.encoders["cxr"](safe_cxr), present

    def forward(self, batch: Batch) -> Output:
        ehr_tokens, cxr_tokens, present = self.tokens(batch)
        pooled = self.fusion(ehr_tokens, cxr_tokens, present)
        embeddings = {"ehr": ehr_tokens.mean(dim=1), "cxr": cxr_tokens.flatten(1)}
        return Output(logits=self.head(pooled), embeddings=embeddings)
