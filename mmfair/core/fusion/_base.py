"""The contract every fusion method follows (DESIGN §5) and the pieces the built-in methods share.

A method is a registered factory ``(FusionSpec) -> FusionModel``. ``forward(batch)`` takes a dict with
``inputs[modality]`` (tensors), ``present[modality]`` (bool [B]) and ``labels`` and returns an
:class:`Output`. Parameters live under ``encoders.<modality>``, ``fusion`` and ``head``/``heads`` so
:meth:`FusionModel.param_groups` can name them ``encoder:<modality>``, ``fusion`` and ``head``.

Image mode: with ``spec.cxr_image`` the base class adds ``image_encoder`` (a fine-tuned timm backbone,
parameter group ``encoder:cxr``) and a forward pre-hook that replaces the CXR images by its features, so a
method is written once, against the D-dim CXR feature, and runs in both input modes.

Absent modalities: the placeholder values of an absent modality must never change a prediction. The
built-in methods select features with ``torch.where`` on ``present`` (not a multiplication, so even a
NaN placeholder cannot leak).

Method hyperparameters: a method with its own (loss weights, depths, bank sizes) declares them as a
frozen pydantic ``Params`` class; ``TrainConfig.fusion_params`` is validated against it and every value,
defaults included, is resolved into config.json. The factory is called as ``cls(spec, params)``.

Data-dependent state: :meth:`FusionModel.prepare` is called once with the training split before the
first epoch (priors, a bank of training patients). Such state lives in buffers registered in
``__init__`` with shapes fixed by ``spec``/``params``, so ``model.pt`` carries it and a loaded run
predicts without the training data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from mmfair.core.encoders.cxr_images import CXRImageEncoder, CXRImageSpec
from mmfair.core.encoders.ehr import build_ehr_encoder

Batch = dict[str, Any]


@dataclass
class Output:
    """``logits`` [B, n_outputs]; sigmoid (binary/multilabel) or softmax (multiclass) gives probabilities."""

    logits: torch.Tensor
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    unimodal_logits: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class FusionSpec:
    """What a factory needs to build a model: sizes from the store and task, choices from TrainConfig."""

    n_features: int  # F: the EHR input has 2F channels (scaled values ‖ observed mask)
    cxr_dim: int  # D of the cached CXR embedding
    n_outputs: int
    hidden_dim: int = 64
    ehr_encoder: str = "lstm"
    dropout: float = 0.2
    output_kind: Literal["sigmoid", "softmax"] = "sigmoid"
    seq_len: int = 48
    # an absent modality's slot: exact zeros, or a learned vector (MedFuse's learnable token); honoured by
    # methods with ``accepts_missing_token`` (the trainer refuses ``learned`` for the others)
    missing_token: Literal["zero", "learned"] = "zero"
    # image mode (``--cxr-input images``): the CXR input is uint8 images, turned into the D-dim feature by a
    # fine-tuned backbone (``image_encoder``) before the method's forward; None = cached embeddings
    cxr_image: CXRImageSpec | None = None


class FusionParams(BaseModel):
    """Base of a method's own hyperparameters (frozen, unknown keys rejected); none by default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CXREmbeddingEncoder(nn.Module):
    """LayerNorm → Linear(D, H) → ReLU → Dropout on the cached CXR embedding (frozen backbone upstream)."""

    def __init__(self, cxr_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(cxr_dim), nn.Linear(cxr_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.out_dim = hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_modality_encoder(modality: str, spec: FusionSpec) -> nn.Module:
    """The default encoder of a modality: the configured EHR encoder, or the CXR embedding MLP."""
    if modality == "ehr":
        return build_ehr_encoder(spec.ehr_encoder, 2 * spec.n_features, spec.hidden_dim, spec.dropout, spec.seq_len)
    if modality == "cxr":
        if spec.cxr_dim <= 0:
            raise ValueError("this method needs CXR embeddings, but the store holds none (cxr_dim = 0)")
        return CXREmbeddingEncoder(spec.cxr_dim, spec.hidden_dim, spec.dropout)
    raise ValueError(f"no default encoder for modality '{modality}'")


def keep_present(features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``features`` where the modality is present, exact zeros elsewhere (placeholders cannot leak)."""
    mask = present.reshape(-1, *([1] * (features.dim() - 1)))
    return torch.where(mask, features, torch.zeros((), dtype=features.dtype, device=features.device))


class FusionModel(nn.Module):
    """Base class: subclasses set ``modalities``/``handles_missing`` and build ``encoders`` (a ModuleDict
    keyed by modality), optionally ``fusion``, and ``head`` (or ``heads``)."""

    modalities: ClassVar[tuple[str, ...]] = ("ehr", "cxr")
    handles_missing: ClassVar[bool] = True
    # Modalities whose branch (``encoders.<m>``, ``heads.<m>``) shares no parameter with another and has
    # its own unimodal logits: the trainer then chooses each branch's epoch on its own validation score.
    independent_branches: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[FusionParams]] = FusionParams
    # True when the method honours ``spec.missing_token == "learned"`` for an absent modality
    accepts_missing_token: ClassVar[bool] = False
    # True when the method runs ``image_encoder`` itself in images mode (fusion inside the CNN, e.g. MMTM)
    embeds_cxr_images: ClassVar[bool] = False
    # Submodules (dotted names) whose inputs are the fused representation (:meth:`representation`); None:
    # ``head``, or every module of ``heads`` when there is no single head
    representation_modules: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.params = params if params is not None else self.Params()
        if spec.cxr_image is not None and "cxr" in type(self).modalities:
            self.image_encoder = CXRImageEncoder(spec.cxr_image)
            if not self.embeds_cxr_images:
                self.register_forward_pre_hook(_embed_cxr_images)

    def prepare(self, train: Any) -> None:
        """Fit data-dependent buffers on the training split (a ``training.data.Split``); default: nothing.

        Called once before the first epoch (a resumed run then restores the buffers from its checkpoint).
        """
        return None

    def init_missing_tokens(self, dims: dict[str, int]) -> None:
        """With ``spec.missing_token == "learned"``, one learned vector per modality in ``dims`` (zero-initialised,
        so training starts from the zero rule) for :meth:`fill_absent`; parameter group ``fusion``."""
        if self.spec.missing_token == "learned":
            self.missing_tokens = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m, d in dims.items()})

    def fill_absent(self, modality: str, features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``features`` where present; elsewhere the modality's learned token, or exact zeros without one."""
        tokens = getattr(self, "missing_tokens", None)
        if tokens is None or modality not in tokens:
            return keep_present(features, present)
        mask = present.bool().reshape(-1, *([1] * (features.dim() - 1)))
        return torch.where(mask, features, tokens[modality].to(features.dtype).expand_as(features))

    def forward(self, batch: Batch) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def representation(self, batch: Batch) -> torch.Tensor:
        """The fused representation of ``batch`` [B, R] (the demographic-encoding probe,
        :mod:`mmfair.core.evaluation.probe`): the first tensor input of each call to the
        ``representation_modules`` during one forward pass (default: the head's input), flattened per stay and
        concatenated in call order (a method that pads a batch pads at the end: the first B rows are kept). A
        method whose head input is not its fused representation overrides this or names its modules in
        ``representation_modules``."""
        captured: list[torch.Tensor] = []

        def grab(_module: nn.Module, args: tuple) -> None:
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None:
                captured.append(first.detach().flatten(1))

        names = self.representation_modules
        if names is not None:
            modules = [self.get_submodule(n) for n in names]
        elif isinstance(getattr(self, "head", None), nn.Module):
            modules = [self.head]
        else:
            heads = getattr(self, "heads", None)
            modules = list(heads.values()) if isinstance(heads, nn.ModuleDict) else []
        handles = [m.register_forward_pre_hook(grab) for m in modules]
        try:
            self(batch)
        finally:
            for handle in handles:
                handle.remove()
        n = len(batch["labels"])
        if not captured or any(t.shape[0] < n for t in captured):
            raise ValueError(f"{type(self).__name__}: no [B, ...] input of its head to use as the fused "
                             "representation; override representation() or set representation_modules")
        return torch.cat([t[:n] for t in captured], dim=1)  # rows past B: padding (M3Care pads small eval batches)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``encoder:<modality>``, ``fusion``, ``head`` (only groups that have any)."""
        groups: dict[str, list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            parts = name.split(".")
            if parts[0] == "encoders":
                key = f"encoder:{parts[1]}"
            elif parts[0] == "image_encoder":
                key = "encoder:cxr"
            elif parts[0] in ("fusion", "missing_tokens"):
                key = "fusion"
            elif parts[0] in ("head", "heads"):
                key = "head"
            else:
                raise ValueError(f"parameter '{name}' is outside encoders/fusion/head; name it so param_groups can place it")
            groups.setdefault(key, []).append(param)
        return groups

    def scorable(self, present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Stays this model can score: all its modalities present (``handles_missing=False``) or any."""
        flags = torch.stack([present[m].bool() for m in self.modalities])
        return flags.any(dim=0) if self.handles_missing else flags.all(dim=0)

    def training_loss(self, output: Output, batch: Batch, task: Any) -> torch.Tensor:
        """Task loss on the scorable stays plus every auxiliary loss."""
        weight = self.scorable(batch["present"])
        loss = task.loss(output.logits, batch["labels"], weight)
        for aux in output.aux_losses.values():
            loss = loss + aux
        return loss


def _embed_cxr_images(model: FusionModel, args: tuple) -> tuple:
    """Forward pre-hook of image mode: the batch's CXR images become the backbone's features (absent stays:
    exact zeros, their placeholder images never enter the network), so the method sees what it sees in
    cached mode."""
    (batch, *rest) = args
    inputs = dict(batch["inputs"])
    inputs["cxr"] = model.image_encoder(inputs["cxr"], batch["present"]["cxr"])
    return ({**batch, "inputs": inputs}, *rest)
