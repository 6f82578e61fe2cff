"""End-to-end CXR input (``train --cxr-input images``): a timm backbone fine-tuned from the uint8 store.

The backbone starts from the prep encoder's weights (saved in ``features.h5`` under
``/cxr/encoder_weights/<encoder_id>``) or from ``--cxr-weights FILE``, and maps each present image to the
same D-dimensional feature the cached embeddings hold, standardised with the training fold's embedding
statistics. A fusion method therefore sees exactly what it sees in cached mode — at the start of training
the two modes give the same inputs (up to augmentation) — and every method runs in both modes; only the
backbone's weights now learn through the method's loss.

Augmentation (training only), light and CXR-appropriate: a random affine (rotation ±``rotate`` degrees,
scale 1 ± ``scale``, translation ± ``translate`` of the side) and brightness/contrast jitter. No horizontal
flip: laterality carries meaning in a chest radiograph (the heart is on the left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmfair.core.encoders.cxr import build_cxr_backbone, to_input


@dataclass(frozen=True)
class CXRImageSpec:
    """What the image encoder needs: the timm model, the training image side, the pixel normalisation."""

    model_name: str
    image_size: int
    norm_mean: float
    norm_std: float
    augment: bool = True
    rotate: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    jitter: float = 0.1


def augment_images(x: torch.Tensor, spec: CXRImageSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random affine + brightness/contrast jitter of normalised images ``[B, 1, H, W]``.

    The parameters come from torch's global RNG on ``x``'s device (so a seeded CPU run is repeatable), or,
    given ``generator``, from that CPU generator (so a seed gives the same augmentation on any device: the
    prep encoder's use).
    """
    b = x.shape[0]
    angle = _uniform((b,), x.device, generator) * math.radians(spec.rotate)
    zoom = 1 + _uniform((b,), x.device, generator) * spec.scale
    shift = _uniform((b, 2), x.device, generator) * (2 * spec.translate)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = 1 + _uniform((b, 1, 1, 1), x.device, generator) * spec.jitter
    brightness = _uniform((b, 1, 1, 1), x.device, generator) * spec.jitter
    return out * contrast.to(x.dtype) + brightness.to(x.dtype)


def _uniform(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """U(−1, 1) draws on ``device`` (global RNG), or on the CPU from ``generator`` and then moved."""
    if generator is None:
        return torch.rand(shape, device=device) * 2 - 1
    return (torch.rand(shape, generator=generator) * 2 - 1).to(device)


class CXRImageEncoder(nn.Module):
    """uint8 ``[B, S, S]`` images + presence ``[B]`` → float ``[B, D]`` standardised backbone features, exact
    zeros for absent stays (their placeholder images never enter the network)."""

    def __init__(self, spec: CXRImageSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = build_cxr_backbone(spec.model_name, None, spec.image_size)
        dim = self.backbone.num_features
        self.out_dim = dim
        # the training fold's cached-embedding statistics (set by ``set_output_scaling``; saved in model.pt)
        self.register_buffer("out_mean", torch.zeros(dim))
        self.register_buffer("out_std", torch.ones(dim))

    def set_output_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.out_mean.copy_(torch.as_tensor(mean, dtype=self.out_mean.dtype))
        self.out_std.copy_(torch.as_tensor(std, dtype=self.out_std.dtype))

    def forward(self, images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        present = present.bool()
        out = torch.zeros(images.shape[0], self.out_dim, device=images.device)
        if not bool(present.any()):
            return out
        return out.index_put((present,), self.features(images[present]))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised features ``[N, D]`` of uint8 images ``[N, S, S]`` (all present), augmented in training."""
        x = to_input(images, self.spec.norm_mean, self.spec.norm_std)
        if self.training and self.spec.augment:
            x = augment_images(x, self.spec)
        return (self.backbone(x).float() - self.out_mean) / self.out_std

    def stages(self, last: int) -> list[tuple[nn.Module, int]]:
        """The backbone's last ``last`` feature stages (timm ``feature_info``) as (module, channels), in order."""
        info = getattr(self.backbone.model, "feature_info", None) or []
        chosen = list(info)[-last:] if last > 0 else []
        return [(self.backbone.model.get_submodule(entry["module"]), int(entry["num_chs"])) for entry in chosen]
