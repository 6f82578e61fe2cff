"""``mmtm``: Multimodal Transfer Module — squeeze-and-excitation gates exchanged between the CXR network's
stages and the hourly EHR stream.

Paper: Joze et al. (H. R. V. Joze, A. Shaban, M. L. Iuzzolino, K. Koishida), "MMTM: Multimodal Transfer
Module for CNN Fusion", CVPR 2020. At a fusion point each stream's feature map is squeezed (global average
over its spatial/temporal axes), the two squeezes are joined, ``Z = ReLU(W [S_A, S_B] + b)`` with
``2 (C_A + C_B) / ratio`` units, and each stream is re-scaled channel-wise by ``2 σ(W_A Z)`` /
``2 σ(W_B Z)`` (so a gate starts near 1), then continues through its own network.

Mechanism as implemented:
* **images mode** (``--cxr-input images``, the paper's setting): the fusion happens *inside* the timm
  backbone — forward hooks on its last ``fused_stages`` feature stages (timm ``feature_info``) replace each
  stage's output by its MMTM-gated version, so the following CNN stages compute on the gated maps; the
  backbone is fine-tuned from the prep encoder's weights like every images-mode method. Stage outputs in
  channels-first ``[N, C, H, W]`` (CNNs) and token ``[N, L, C]`` (ViTs) layouts are both handled;
* the EHR stream is a projection of the hourly inputs followed by one LSTM layer per fusion point
  (residual), so MMTM gates the **real hourly sequence** at every fusion point — CareBench copies one
  pooled EHR vector across the 48 steps, so its "temporal" stream is constant (carebench.md §3);
* the prediction is a linear head on [EHR stream's last hour ‖ CXR features through the CXR embedding MLP
  ‖ CXR presence];
* **absent CXR (per sample):** the CNN runs only on the stays with an image; for the others the EHR
  stream passes every fusion point ungated and the CXR slot of the head is exact zeros, so a placeholder
  image is never read (CareBench pushes an all-zero image through the CNN).

Deviations:
* **cached-embeddings mode** (the default input mode) has no CNN stages: one MMTM unit exchanges gates
  between the EHR sequence and the cached CXR embedding (a 1×1 "feature map"), then the gated embedding
  goes through the CXR embedding MLP. This is MMTM at the embedding level, not in-CNN fusion;
* the EHR stream is its own stack of LSTM layers (``hidden_dim`` units, one per fusion point), not the
  configured ``--ehr-encoder``, because MMTM needs the EHR representation at several depths;
* fusion points: the backbone's last ``fused_stages`` stages (default 2; the paper fuses at the later
  stages of its ResNets, CareBench at every stage); ``ratio`` 4 as in the paper's code;
* one optimiser over all parameters (CareBench steps four AdamW optimisers in turn, four forward/backward
  passes per batch), and no auxiliary alignment loss (CareBench computes one and never adds it);
* the paper averages the two streams' class scores; here one linear head reads both streams and the
  presence flag, so a stay without a CXR is scored from the EHR stream alone.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from mmfair.core.fusion._base import Batch, CXREmbeddingEncoder, FusionModel, FusionParams, FusionSpec, Output, keep_present
from mmfair.core.registry import FUSIONS


class MMTMParams(FusionParams):
    fused_stages: int = Field(2, ge=1, le=8, description="images mode: fuse after the backbone's last k feature stages")
    ratio: int = Field(4, ge=1, description="MMTM compression ratio: the joint layer has 2(C_A + C_B)/ratio units")


class MMTMUnit(nn.Module):
    """One MMTM: squeeze both streams, a joint excitation, a channel gate ``2σ(·)`` for each."""

    def __init__(self, visual_channels: int, ehr_channels: int, ratio: int) -> None:
        super().__init__()
        joint = max(4, 2 * (visual_channels + ehr_channels) // ratio)
        self.squeeze = nn.Linear(visual_channels + ehr_channels, joint)
        self.excite_visual = nn.Linear(joint, visual_channels)
        self.excite_ehr = nn.Linear(joint, ehr_channels)

    def forward(self, visual: torch.Tensor, ehr: torch.Tensor, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``visual`` [N, C, *spatial] (or [N, L, C] with ``channels_last``), ``ehr`` [N, T, H] → both gated."""
        if channels_last:
            s_visual = visual.mean(dim=1)
        else:
            s_visual = visual.flatten(2).mean(dim=2)
        z = torch.relu(self.squeeze(torch.cat([s_visual.to(ehr.dtype), ehr.mean(dim=1)], dim=1)))
        gate_visual = 2 * torch.sigmoid(self.excite_visual(z)).to(visual.dtype)
        gate_ehr = 2 * torch.sigmoid(self.excite_ehr(z))
        if channels_last:
            gated_visual = visual * gate_visual[:, None, :]
        else:
            gated_visual = visual * gate_visual.reshape(*gate_visual.shape, *([1] * (visual.dim() - 2)))
        return gated_visual, ehr * gate_ehr[:, None, :]


class StagedEHR(nn.Module):
    """Hourly inputs → projection → one residual LSTM layer per fusion point (sequences kept)."""

    def __init__(self, input_dim: int, hidden_dim: int, n_stages: int, dropout: float) -> None:
        super().__init__()
        self.project = nn.Linear(input_dim, hidden_dim)
        self.layers = nn.ModuleList([nn.LSTM(hidden_dim, hidden_dim, batch_first=True) for _ in range(n_stages)])
        self.dropout = nn.Dropout(dropout)
        self.out_dim = hidden_dim

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.project(x))

    def stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        out, _ = self.layers[i](h)
        return h + out

    def finish(self, h: torch.Tensor) -> torch.Tensor:
        return self.dropout(h[:, -1])


def _gate_rows(unit: MMTMUnit, visual: torch.Tensor, h: torch.Tensor, present: torch.Tensor,
               channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """MMTM between ``visual`` (the present stays only) and those stays' rows of ``h``; other rows ungated."""
    gated_visual, gated_h = unit(visual, h[present], channels_last)
    return gated_visual, h.index_put((present,), gated_h)


@FUSIONS.register(
    "mmtm",
    summary="MMTM: squeeze-excitation gates exchanged between CNN stages (images mode) and the hourly EHR stream",
    paper="Joze et al. 2020 (MMTM, CVPR)",
)
class MMTM(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True
    embeds_cxr_images = True
    Params = MMTMParams
    # the tuning search space (mmfair study): Params field -> ("log"|"float"|"int", low, high) or ("choice", [values])
    search_space = {"ratio": ("choice", [2, 4, 8])}

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        if spec.cxr_dim <= 0:
            raise ValueError("mmtm needs CXR features, but the store holds none (cxr_dim = 0)")
        image_encoder = getattr(self, "image_encoder", None)
        stages = image_encoder.stages(self.params.fused_stages) if image_encoder is not None else []
        if image_encoder is not None and not stages:
            raise ValueError(f"mmtm: timm model '{spec.cxr_image.model_name}' exposes no feature stages")
        channels = [c for _, c in stages] or [spec.cxr_dim]
        self.encoders = nn.ModuleDict({
            "ehr": StagedEHR(2 * spec.n_features, spec.hidden_dim, len(channels), spec.dropout),
            "cxr": CXREmbeddingEncoder(spec.cxr_dim, spec.hidden_dim, spec.dropout),
        })
        self.fusion = nn.ModuleList([MMTMUnit(c, spec.hidden_dim, self.params.ratio) for c in channels])
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(2 * spec.hidden_dim + 1, spec.n_outputs))
        self._stage_state: dict[str, Any] | None = None
        for i, (module, _) in enumerate(stages):
            module.register_forward_hook(self._stage_hook(i))

    def _stage_hook(self, i: int):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            state = self._stage_state
            if state is None:  # the backbone used outside an MMTM forward: no fusion
                return None
            h = self.encoders["ehr"].stage(i, state["h"])
            gated, state["h"] = _gate_rows(self.fusion[i], output, h, state["present"], channels_last=output.dim() == 3)
            state["done"] = i + 1
            return gated
        return hook

    def forward(self, batch: Batch) -> Output:
        ehr = self.encoders["ehr"]
        present = batch["present"]["cxr"].bool()
        h = ehr.start(batch["inputs"]["ehr"])
        n = h.shape[0]
        cxr_features = torch.zeros(n, self.spec.cxr_dim, device=h.device)
        image_encoder = getattr(self, "image_encoder", None)
        if image_encoder is not None:
            self._stage_state = {"h": h, "present": present, "done": 0}
            try:
                if bool(present.any()):
                    cxr_features = cxr_features.index_put((present,), image_encoder.features(batch["inputs"]["cxr"][present]))
                state = self._stage_state
            finally:
                self._stage_state = None
            h = state["h"]
            for i in range(state["done"], len(self.fusion)):  # no image in the batch: the EHR stream alone
                h = ehr.stage(i, h)
        else:
            h = ehr.stage(0, h)
            embedding = keep_present(batch["inputs"]["cxr"], present)
            if bool(present.any()):
                gated, h = _gate_rows(self.fusion[0], embedding[present][:, :, None], h, present)
                cxr_features = cxr_features.index_put((present,), gated.squeeze(2).to(cxr_features.dtype))
        ehr_vector = ehr.finish(h)
        cxr_vector = keep_present(self.encoders["cxr"](cxr_features.to(ehr_vector.dtype)), present)
        fused = torch.cat([ehr_vector, cxr_vector, present.to(ehr_vector.dtype)[:, None]], dim=1)
        return Output(logits=self.head(fused), embeddings={"ehr": ehr_vector, "cxr": cxr_vector})
