"""``daft``: the dynamic affine feature-map transform — inside the CNN in images mode, FiLM on cached features.

Paper: Pölsterl et al. (S. Pölsterl, T. N. Wolf, C. Wachinger), "Combining 3D Image and Tabular Data
via the Dynamic Affine Feature Map Transform", MICCAI 2021. Inside the last residual block of a CNN,
the image feature maps are global-average-pooled, concatenated with the tabular data, and a bottleneck
MLP outputs a per-channel scale α and shift β that transform the feature maps, F' = α ⊙ F + β; the
rest of the block and the classifier then run on the transformed maps. The image is the primary
input and the tabular data conditions it.

**Images mode** (``--cxr-input images``, the paper's setting): the transform acts **inside the CNN** —
a forward hook on the backbone's second-to-last feature stage (timm ``feature_info``) replaces its
feature maps F by α ⊙ F + β, (α, β) = bottleneck MLP([global-average-pooled F ‖ EHR embedding]), so
the last stage, the pooling and the head run on the transformed maps; the backbone is fine-tuned from
the prep encoder's weights. Deviations there: the transform sits *after* a whole stage rather than
inside the last residual block between its convolutions (timm exposes stage outputs, not block
internals, for every model); α is parametrised as 1 + Δα with the MLP's last layer zero-initialised, so
training starts from the pretrained backbone unchanged (the paper initialises the MLP at random).

**Cached-embeddings mode** (the default): with no spatial feature map left, DAFT's transform of the
feature maps reduces to a feature-wise affine transform of one vector — FiLM conditioning (Perez et
al. 2018) of the CXR features on the EHR. What is kept from DAFT: the conditioning input is [pooled
image features ‖ auxiliary data], the bottleneck MLP, the linear (identity) activation of α and β, and
the transform sitting *inside* a residual block followed by the rest of that block. What is lost: the
spatial, per-channel modulation of a feature map before the last convolutions.

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

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder, keep_present
from mmfair.core.registry import FUSIONS


class DAFTMapTransform(nn.Module):
    """F' = (1 + Δα) ⊙ F + β on feature maps [N, C, *spatial] (or tokens [N, L, C]), (Δα, β) from
    [GAP(F) ‖ auxiliary]; identity at initialisation."""

    def __init__(self, channels: int, aux_dim: int) -> None:
        super().__init__()
        width = max(4, (channels + aux_dim) // 4)
        self.bottleneck = nn.Sequential(nn.Linear(channels + aux_dim, width), nn.ReLU(), nn.Linear(width, 2 * channels))
        nn.init.zeros_(self.bottleneck[2].weight)
        nn.init.zeros_(self.bottleneck[2].bias)

    def forward(self, maps: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        channels_last = maps.dim() == 3
        pooled = maps.mean(dim=1) if channels_last else maps.flatten(2).mean(dim=2)
        delta, shift = self.bottleneck(torch.cat([pooled.to(aux.dtype), aux], dim=1)).chunk(2, dim=1)
        scale = (1 + delta).to(maps.dtype)
        shift = shift.to(maps.dtype)
        if channels_last:
            return maps * scale[:, None, :] + shift[:, None, :]
        view = (*scale.shape, *([1] * (maps.dim() - 2)))
        return maps * scale.reshape(view) + shift.reshape(view)


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
    summary="DAFT: EHR-conditioned affine transform of CNN feature maps (images mode) or of the cached features (FiLM); CXR required",
    paper="Pölsterl et al. 2021 (DAFT, MICCAI)",
)
class DAFT(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = False
    embeds_cxr_images = True

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        image_encoder = getattr(self, "image_encoder", None)
        self._aux: torch.Tensor | None = None
        if image_encoder is not None:
            stages = image_encoder.stages(2)
            if len(stages) < 2:
                raise ValueError(f"daft: timm model '{spec.cxr_image.model_name}' exposes fewer than two feature stages")
            module, channels = stages[0]
            self.fusion = DAFTMapTransform(channels, self.encoders["ehr"].out_dim)
            module.register_forward_hook(self._transform_hook)
        else:
            self.fusion = DAFTBlock(self.encoders["cxr"].out_dim, self.encoders["ehr"].out_dim, spec.dropout)
        self.head = nn.Linear(self.encoders["cxr"].out_dim, spec.n_outputs)

    def _transform_hook(self, module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor | None:
        return None if self._aux is None else self.fusion(output, self._aux)

    def forward(self, batch: Batch) -> Output:
        present = batch["present"]["cxr"].bool()
        ehr = self.encoders["ehr"](batch["inputs"]["ehr"])
        image_encoder = getattr(self, "image_encoder", None)
        if image_encoder is None:
            cxr = self.encoders["cxr"](keep_present(batch["inputs"]["cxr"], present))
            logits = self.head(self.fusion(cxr, ehr))
            return Output(logits=logits, embeddings={"ehr": ehr, "cxr": cxr})
        features = torch.zeros(ehr.shape[0], self.spec.cxr_dim, device=ehr.device)
        if bool(present.any()):
            self._aux = ehr[present]
            try:
                features = features.index_put((present,), image_encoder.features(batch["inputs"]["cxr"][present]))
            finally:
                self._aux = None
        cxr = keep_present(self.encoders["cxr"](features.to(ehr.dtype)), present)
        return Output(logits=self.head(cxr), embeddings={"ehr": ehr, "cxr": cxr})
