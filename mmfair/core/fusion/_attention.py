"""``attention``: self-attention over modality tokens, absent modalities removed by the key-padding mask.

Paper: the attention-based fusion studied in "The Multimodal Paradox" (2025) — each modality is encoded
to one token, the tokens (plus a learned modality-type embedding) go through a Transformer encoder
layer so every modality can attend to the others (Vaswani et al. 2017 self-attention), and the fused
representation is pooled from the output tokens. The paper's text was not available to us when this
was written: the layer count, widths, pooling and missing-modality rule below are our choices, each
stated, not taken from it.

Mechanism and deviations:
* input mode: the CXR token comes from the **cached CXR embedding** (frozen backbone upstream, an MLP
  here), not from an end-to-end image network; the EHR token from the configured EHR encoder
  (``--ehr-encoder``). Each token is projected to ``hidden_dim`` and gets its modality-type embedding;
* one pre-norm ``nn.TransformerEncoderLayer`` (4 heads when ``hidden_dim`` allows, feed-forward 4×),
  no positional encoding (the tokens are a set; the type embedding tells them apart);
* **absent modalities (DESIGN §5):** an absent modality's token is replaced by exact zeros
  (``torch.where``, so even a NaN placeholder cannot leak) *and* masked in ``src_key_padding_mask``,
  so no present token ever attends to it; pooling is the mean over the **present** output tokens only.
  A stay with only the EHR therefore gets the EHR token's own self-attention output. The paper does
  not prescribe a missing-modality rule; this masking is our choice, stated here. With
  ``--missing-token learned`` an absent modality's embedding is instead a learned vector (MedFuse's
  learnable token) whose token is attended like a present one;
* pooled vector → Dropout → linear head; one layer, ``hidden_dim`` 64 by default (no tuning).
"""

from __future__ import annotations

import torch
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder, keep_present
from mmfair.core.registry import FUSIONS


class ModalityTokenAttention(nn.Module):
    """Per-modality projection + type embedding, one Transformer encoder layer, masked mean pooling."""

    def __init__(self, in_dims: dict[str, int], dim: int, dropout: float) -> None:
        super().__init__()
        self.names = list(in_dims)
        self.project = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in in_dims.items()})
        self.type_embedding = nn.Parameter(torch.randn(len(self.names), dim) * 0.02)
        heads = 4 if dim % 4 == 0 else 1
        self.layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = []
        for i, m in enumerate(self.names):
            token = self.project[m](features[m]) + self.type_embedding[i]
            tokens.append(keep_present(token, present[m]))
        x = torch.stack(tokens, dim=1)  # [B, M, H]
        keep = torch.stack([present[m].bool() for m in self.names], dim=1)  # [B, M]
        out = self.layer(x, src_key_padding_mask=~keep)
        out = torch.where(keep[:, :, None], out, torch.zeros((), dtype=out.dtype, device=out.device))
        pooled = out.sum(dim=1) / keep.sum(dim=1, keepdim=True).clamp_min(1).to(out.dtype)
        return self.norm(pooled)


@FUSIONS.register(
    "attention",
    summary="self-attention over modality tokens (type embeddings; absent ones masked out), mean of present tokens",
    paper="The Multimodal Paradox (2025); Vaswani et al. 2017",
)
class AttentionFusion(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True
    accepts_missing_token = True

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        in_dims = {m: self.encoders[m].out_dim for m in self.modalities}
        self.init_missing_tokens({"cxr": in_dims["cxr"]})
        self.fusion = ModalityTokenAttention(in_dims, spec.hidden_dim, spec.dropout)
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(spec.hidden_dim, spec.n_outputs))

    def forward(self, batch: Batch) -> Output:
        present = batch["present"]
        embeddings = {m: self.encoders[m](batch["inputs"][m]) for m in self.modalities}
        if hasattr(self, "missing_tokens"):  # the learned token stands in for the absent modality and is attended
            filled = {m: self.fill_absent(m, e, present[m]) for m, e in embeddings.items()}
            logits = self.head(self.fusion(filled, {m: torch.ones_like(p, dtype=torch.bool) for m, p in present.items()}))
        else:
            logits = self.head(self.fusion(embeddings, present))
        return Output(logits=logits, embeddings=embeddings)
