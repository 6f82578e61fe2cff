"""The contract every fusion method follows (DESIGN §5) and the pieces the built-in methods share.

A method is a registered factory ``(FusionSpec) -> FusionModel``. ``forward(batch)`` takes a dict with
``inputs[modality]`` (tensors), ``present[modality]`` (bool [B]) and ``labels`` and returns an
:class:`Output`. Parameters live under ``encoders.<modality>``, ``fusion`` and ``head``/``heads`` so
:meth:`FusionModel.param_groups` can name them ``encoder:<modality>``, ``fusion`` and ``head``.

Absent modalities: the placeholder values of an absent modality must never change a prediction. The
built-in methods select features with ``torch.where`` on ``present`` (not a multiplication, so even a
NaN placeholder cannot leak).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

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

    def __init__(self, spec: FusionSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, batch: Batch) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``encoder:<modality>``, ``fusion``, ``head`` (only groups that have any)."""
        groups: dict[str, list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            parts = name.split(".")
            if parts[0] == "encoders":
                key = f"encoder:{parts[1]}"
            elif parts[0] == "fusion":
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
