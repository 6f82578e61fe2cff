"""``daft``: the dynamic affine feature-map transform, reduced to cached pooled CXR features (FiLM).

Paper: Pölsterl et al. (S. Pölsterl, T. N. Wolf, C. Wachinger), "Combining 3D Image and Tabular Data
via the Dynamic Affine Feature Map Transform", MICCAI 2021. Inside the last residual block of a CNN,
the image feature maps are global-average-pooled, concatenated with the tabular data, and a bottleneck
MLP outputs a per-channel scale α and shift β that transform the feature maps, F' = α ⊙ F + β; the
rest of the block and the classifier then run on the transformed maps. The image is the primary
input and the tabular data conditions it.

**Input mode, stated plainly:** this runs on the **cached, pooled CXR embedding**, not inside a CNN.
With no spatial feature map left, DAFT's transform of the feature maps reduces to a feature-wise
affine transform of one vector — FiLM conditioning (Perez et al. 2018) of the CXR features on the EHR.
What is kept from DAFT: the conditioning input is [pooled image features ‖ auxiliary data] (DAFT
feeds the pooled maps, not only the tabular data, to the bottleneck), the bottleneck MLP, the linear
(identity) activation of α and β, and the transform sitting *inside* a residual block followed by
the rest of that block. What is lost: the spatial, per-channel modulation of a feature map before the
last convolutions. A DAFT that fuses inside the CNN needs the end-to-end image mode (not built yet).

Other deviations:
* the "tabular" input is the EHR sequence encoder's embedding (``--ehr-encoder``), trained jointly,
  not a vector of raw clinical variables;
* the residual block is LayerNorm → Linear → [affine transform] → ReLU → Linear (+ skip), standing in
  for DAFT's conv → BN → [transform] → ReLU → conv (+ skip); bottleneck width (H + H)/4 (our choice);
* **absent CXR:** the image is DAFT's primary input and DAFT has no rule for an absent one, so
  ``handles_missing=False``: it trains on the stays with a CXR and writes an empty score for the
  others (the evaluator marks them ``defined=false``), like ``cxr``. Absent images are replaced by
  exact zeros before the encoder so a NaN placeholder cannot poison the gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionSpec, Output, build_modality_encoder, keep_present
from mmfair.core.registry import FUSIONS


class DAFTBlock(nn.Module):
    """Residual block whose hidden features get α ⊙ h + β, (α, β) = MLP([pooled image ‖ auxiliary])."""

    def __init__(self, dim: int, aux_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.inner = nn.Linear(dim, dim)
        width = max(4, (dim + aux_dim) // 4)
        self.bottleneck = nn.Sequential(nn.Linear(dim + aux_dim, width), nn.ReLU(), nn.Linear(width, 2 * dim))
        self.outer = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))

    def forward(self, image: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        scale, shift = self.bottleneck(torch.cat([image, aux], dim=1)).chunk(2, dim=1)
        h = self.inner(self.norm(image))
        return image + self.outer(scale * h + shift)


@FUSIONS.register(
    "daft",
    summary="DAFT on cached CXR embeddings: EHR-conditioned affine (FiLM) transform of the CXR features; CXR required",
    paper="Pölsterl et al. 2021 (DAFT, MICCAI)",
)
class DAFT(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = False

    def __init__(self, spec: FusionSpec) -> None:
        super().__init__(spec)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        self.fusion = DAFTBlock(self.encoders["cxr"].out_dim, self.encoders["ehr"].out_dim, spec.dropout)
        self.head = nn.Linear(self.encoders["cxr"].out_dim, spec.n_outputs)

    def forward(self, batch: Batch) -> Output:
        present = batch["present"]["cxr"].bool()
        ehr = self.encoders["ehr"](batch["inputs"]["ehr"])
        cxr = self.encoders["cxr"](keep_present(batch["inputs"]["cxr"], present))
        logits = self.head(self.fusion(cxr, ehr))
        return Output(logits=logits, embeddings={"ehr": ehr, "cxr": cxr})
