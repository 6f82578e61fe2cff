"""A timm backbone for one-channel chest X-rays, with offline weights only.

Weights come from a local file through timm's ``pretrained_cfg_overlay=dict(file=...)``, which also adapts a
3-channel input conv to 1 channel (RGB kernels summed) and drops the classifier. ``pretrained=True`` is never
used without a file, so nothing reaches for the network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmfair.core.errors import ConfigError, InputFileError

# ImageNet statistics averaged over RGB: what a 1-channel conv made by summing RGB kernels expects.
IMAGENET_GRAY_MEAN = 0.449
IMAGENET_GRAY_STD = 0.226


class CXRBackbone(nn.Module):
    """A timm model with 1 input channel and no classifier: ``[B, 1, H, W]`` float → ``[B, num_features]``.

    ``num_features`` is the width of the pooled output, which for some models (MobileNetV3, LCNet) is the
    head's hidden size rather than timm's ``num_features``.
    """

    def __init__(self, model: nn.Module, model_name: str):
        super().__init__()
        self.model = model
        self.model_name = model_name
        self.num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build_cxr_backbone(
    model_name: str,
    weights: Path | str | None = None,
    image_size: int = 128,
    drop_rate: float = 0.0,
) -> CXRBackbone:
    """Build a 1-channel timm backbone that outputs pooled features.

    Args:
        model_name: a timm model name, e.g. ``mobilenetv3_small_100``.
        weights: optional local ``.safetensors``/``.pth`` file. 3-channel weights are adapted to 1 channel;
            a classifier in the file is dropped. ``None`` gives a random init (seed it first).
        image_size: input side; passed to models whose input size is fixed (ViTs), ignored by CNNs.
        drop_rate: dropout before the (absent) classifier, kept for models that use it in the head.

    Returns:
        A :class:`CXRBackbone` with ``num_features``.
    """
    import timm

    if not timm.is_model(model_name):
        raise ConfigError(f"cxr_encoder '{model_name}' is not a timm model name (see timm.list_models())")
    kwargs: dict = dict(in_chans=1, num_classes=0)
    if drop_rate:
        kwargs["drop_rate"] = drop_rate
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is not None and getattr(cfg, "fixed_input_size", False):
        kwargs["img_size"] = image_size
    if weights is None:
        model = timm.create_model(model_name, pretrained=False, **kwargs)
        return CXRBackbone(model, model_name)

    path = Path(weights)
    if not path.is_file():
        raise InputFileError(f"{path}: CXR encoder weights file not found")
    try:
        state = timm.models.load_state_dict(str(path), use_ema=False)
    except Exception as exc:  # torch/safetensors raise many types for a bad file
        raise InputFileError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    overlay: dict = dict(file=str(path))
    first_conv = _first_conv_name(cfg)
    if first_conv and f"{first_conv}.weight" in state:
        # Tell timm how many channels the file has, so a 1-channel file loads unchanged and a 3-channel
        # one is summed down.
        src_chans = int(state[f"{first_conv}.weight"].shape[1])
        overlay["input_size"] = (src_chans, image_size, image_size)
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not fit timm model '{model_name}': {exc}") from None
    # timm loads with strict=False once the classifier is dropped, so an unrelated file would silently
    # leave a random model: every backbone tensor must come from the file.
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise ConfigError(
            f"{path}: weights do not fit timm model '{model_name}': {len(missing)} tensors missing "
            f"(e.g. {', '.join(missing[:3])})"
        )
    return CXRBackbone(model, model_name)


def _first_conv_name(cfg) -> str | None:
    first = getattr(cfg, "first_conv", None) if cfg is not None else None
    if isinstance(first, (list, tuple)):
        first = first[0] if first else None
    return first


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """Resize ``[N, S, S]`` uint8 images to ``[N, size, size]`` uint8 (bilinear, antialiased), in chunks."""
    if images.ndim != 3:
        raise ValueError(f"expected [N, S, S] images, got shape {tuple(images.shape)}")
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = torch.empty((images.shape[0], size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].unsqueeze(1).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + chunk] = y.squeeze(1).round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_input(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 ``[B, H, W]`` → normalised float ``[B, 1, H, W]`` (channels-last, faster for CNNs on CPU)."""
    x = images.unsqueeze(1).float().div_(255.0).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)
