"""A timm backbone for one-channel chest X-rays, with offline weights only, and the card of its weights.

Weights come from a local file. For a timm model name they load through timm's
``pretrained_cfg_overlay=dict(file=...)``, which also adapts a 3-channel input conv to 1 channel (RGB kernels
summed) and drops the classifier. A *preset* (``CXR_PRESETS``, e.g. ``xrv-densenet121-res224-chex``) names a
foreign checkpoint format, the timm model its tensors load into, its own input preprocessing and its card.
``pretrained=True`` is never used without a file, so nothing reaches for the network.

Every encoder has an :class:`EncoderCard`: what its weights saw before prep. Weights pretrained on MIMIC-CXR
may have seen the cohort's test patients' images (Yang et al., Nat Med 2024, and RAD-DINO's and
torchxrayvision's model cards list MIMIC-CXR among their training data), which prep warns about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmfair.core.errors import ConfigError, InputFileError
from mmfair.core.registry import Registry

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


MimicExposure = Literal["none", "non-cohort", "yes", "unknown"]

#: What mmfair's own trained encoder saw (DESIGN §3.2).
OWN_CARD_TEXT = "non-cohort MIMIC-CXR subjects only"
#: Words in a declared pretraining text that mean MIMIC-CXR images were seen (RAD-DINO was trained on them).
_MIMIC_WORDS = ("mimic", "rad-dino", "raddino", "rad_dino")


@dataclass(frozen=True)
class EncoderCard:
    """What a CXR encoder's weights were trained on before prep.

    ``mimic_cxr``: ``none`` (no MIMIC-CXR image), ``non-cohort`` (only MIMIC-CXR subjects outside the ICU
    cohort: mmfair's own encoder), ``yes`` (MIMIC-CXR images of any subject, so possibly the cohort's test
    patients) or ``unknown`` (a local file whose pretraining data was not declared).
    """

    pretraining_data: str
    mimic_cxr: MimicExposure
    reference: str = ""

    @property
    def warning(self) -> str:
        """The provenance warning a report carries; empty when the weights cannot have seen the cohort."""
        if self.mimic_cxr == "yes":
            return (f"the CXR encoder's weights were pretrained on {self.pretraining_data}, which includes "
                    "MIMIC-CXR: they may have seen this cohort's test patients' images, so CXR test scores can "
                    "be optimistic")
        if self.mimic_cxr == "unknown":
            return ("the CXR encoder's pretraining data is not declared (prep --cxr-pretraining): if it includes "
                    "MIMIC-CXR, the weights may have seen this cohort's test patients' images")
        return ""

    def attrs(self) -> dict[str, str]:
        return {"pretraining_data": self.pretraining_data, "pretraining_mimic_cxr": self.mimic_cxr,
                "pretraining_reference": self.reference, "provenance_warning": self.warning}


def declared_card(pretraining: str | None) -> EncoderCard:
    """The card of a timm weights file from what the user declared (``None`` = not declared)."""
    if pretraining is None or not pretraining.strip():
        return EncoderCard("undeclared (local weights file)", "unknown")
    text = pretraining.strip()
    seen = any(w in text.lower() for w in _MIMIC_WORDS)
    return EncoderCard(text, "yes" if seen else "none", "declared with --cxr-pretraining")


@dataclass(frozen=True)
class CXRPreset:
    """A foreign pretrained checkpoint format: the timm model its tensors load into, its input
    preprocessing (``(pixel / 255 − norm_mean) / norm_std`` at ``image_size``) and its card."""

    timm_model: str
    image_size: int
    norm_mean: float
    norm_std: float
    card: EncoderCard
    read_state: Callable[[Path], dict[str, torch.Tensor]]
    #: checkpoint tensors that are not part of the backbone (the classifier, calibration buffers)
    drop_prefixes: tuple[str, ...] = ()


CXR_PRESETS: Registry[CXRPreset] = Registry("CXR encoder preset")


def build_cxr_backbone(
    model_name: str,
    weights: Path | str | None = None,
    image_size: int = 128,
    drop_rate: float = 0.0,
) -> CXRBackbone:
    """Build a 1-channel timm backbone that outputs pooled features.

    Args:
        model_name: a timm model name, e.g. ``mobilenetv3_small_100``, or a :data:`CXR_PRESETS` name (which
            needs ``weights``).
        weights: optional local ``.safetensors``/``.pth`` file. 3-channel weights are adapted to 1 channel;
            a classifier in the file is dropped. ``None`` gives a random init (seed it first).
        image_size: input side; passed to models whose input size is fixed (ViTs), ignored by CNNs.
        drop_rate: dropout before the (absent) classifier, kept for models that use it in the head.

    Returns:
        A :class:`CXRBackbone` with ``num_features``.
    """
    import timm

    if model_name in CXR_PRESETS:
        return _build_preset(model_name, weights)
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


def _build_preset(name: str, weights: Path | str | None) -> CXRBackbone:
    import timm

    preset = CXR_PRESETS.get(name)
    if weights is None:
        raise ConfigError(f"cxr_encoder '{name}' needs a local weights file (--cxr-weights FILE); mmfair never "
                          "downloads weights")
    path = Path(weights)
    if not path.is_file():
        raise InputFileError(f"{path}: CXR encoder weights file not found")
    state = preset.read_state(path)
    state = {k: v for k, v in state.items() if not k.startswith(preset.drop_prefixes)}
    model = timm.create_model(preset.timm_model, pretrained=False, in_chans=1, num_classes=0)
    expected = model.state_dict()
    # checkpoints from torch < 0.4.1 have no BatchNorm step counters; they are not used in eval mode
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or extra or wrong:
        bad = (missing or extra or wrong)[:3]
        raise ConfigError(f"{path}: weights do not fit preset '{name}' ({preset.timm_model}): {len(missing)} "
                          f"missing, {len(extra)} unexpected, {len(wrong)} misshapen tensors (e.g. {', '.join(bad)})")
    model.load_state_dict(state, strict=False)
    return CXRBackbone(model, preset.timm_model)


# ------------------------------------------------------------------------------------------ torchxrayvision

# torchxrayvision.datasets.normalize maps a pixel p in [0, 255] to (2 p / 255 − 1) · 1024 = (p/255 − 0.5) · 2048
XRV_NORM_MEAN, XRV_NORM_STD = 0.5, 1.0 / 2048.0
_XRV_REF = "Cohen et al., MIDL 2022 (torchxrayvision); its model card lists each weight set's datasets"
_XRV_CLASS_PREFIXES = ("torchxrayvision.", "torch.nn.modules.")


class _PickledModule:
    """Stands in for a pickled ``nn.Module`` class: keeps the pickled attributes, runs no code."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def read_xrv_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a torchxrayvision DenseNet checkpoint: a state dict, or a release file (the whole pickled
    module, as ``torch.save(model)`` writes it and torchxrayvision downloads it).

    Both load with ``weights_only=True``: the module classes of a release file are replaced by inert
    stand-ins that only hold their attributes, so neither torchxrayvision nor arbitrary code is needed.
    """
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # a legacy (pre-zip) file or not a torch file: let torch.load say which
        names = []
    foreign = [n for n in names if not n.startswith(_XRV_CLASS_PREFIXES)]
    if foreign:
        raise InputFileError(f"{path}: not a torchxrayvision checkpoint (it pickles {', '.join(foreign[:3])})")
    stand_ins = [(type(n.rsplit(".", 1)[-1], (_PickledModule,), {}), n) for n in names]
    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputFileError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    if isinstance(obj, _PickledModule):
        return _module_tensors(obj)
    raise InputFileError(f"{path}: not a torchxrayvision checkpoint (holds a {type(obj).__name__})")


def _module_tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    attrs = obj.__dict__
    out: dict[str, torch.Tensor] = {}
    for key, value in (attrs.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + key] = value.detach()
    skip = attrs.get("_non_persistent_buffers_set") or set()
    for key, value in (attrs.get("_buffers") or {}).items():
        if value is not None and key not in skip:
            out[prefix + key] = value
    for key, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            out.update(_module_tensors(child, f"{prefix}{key}."))
    return out


_XRV_SETS = {
    "chex": ("CheXpert (Stanford)", "none"),
    "nih": ("NIH ChestX-ray14", "none"),
    "pc": ("PadChest", "none"),
    "rsna": ("RSNA Pneumonia Challenge (NIH ChestX-ray14 images)", "none"),
    "mimic_nb": ("MIMIC-CXR", "yes"),
    "mimic_ch": ("MIMIC-CXR", "yes"),
    "all": ("NIH, PadChest, CheXpert, MIMIC-CXR, RSNA, OpenI, Google and Kaggle sets", "yes"),
}
for _set, (_data, _mimic) in _XRV_SETS.items():
    CXR_PRESETS.register(
        f"xrv-densenet121-res224-{_set}",
        summary=f"torchxrayvision DenseNet-121 (densenet121-res224-{_set}), 224 px, pixels in [-1024, 1024]; "
                f"trained on {_data}",
        paper=_XRV_REF,
    )(CXRPreset("densenet121", 224, XRV_NORM_MEAN, XRV_NORM_STD, EncoderCard(_data, _mimic, _XRV_REF),
                read_xrv_state, drop_prefixes=("classifier.", "op_threshs")))


def _first_conv_name(cfg) -> str | None:
    first = getattr(cfg, "first_conv", None) if cfg is not None else None
    if isinstance(first, (list, tuple)):
        first = first[0] if first else None
    return first


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
