"""``medfuse``: MedFuse — an LSTM reads the sequence of modality embeddings [EHR, CXR].

Paper: Hayat et al. (N. Hayat, K. J. Geras, F. E. Shamout), "MedFuse: Multi-modal fusion with clinical
time-series data and chest X-ray images", MLHC 2022 (PMLR 182). The EHR encoder (an LSTM over the
hourly series) gives v_ehr; the image encoder's features are linearly projected into the EHR feature
space, v_cxr = W·f_cxr; a fusion LSTM reads the sequence [v_ehr, v_cxr] and its last hidden state
goes to a linear classifier. Because the fused representation is a *sequence*, a stay without a CXR
is simply the shorter sequence [v_ehr].

Mechanism and deviations:
* input mode: the CXR features are the **cached CXR embeddings** (frozen backbone upstream) passed
  through the shared CXR embedding MLP, not a ResNet-34 fine-tuned end to end;
* the EHR encoder is the configured one (``--ehr-encoder``; ``lstm`` is MedFuse's own); both encoders
  are trained jointly with the fusion LSTM from random initialisation — MedFuse first pretrains the EHR
  LSTM on the task and the image encoder on the radiology labels, then fine-tunes the fusion (here the
  frozen upstream CXR encoder plays the part of the radiology pretraining);
* both embeddings get a linear projection to the shared width (MedFuse projects only the image
  features into the EHR space; with an EHR encoder of another width, e.g. ``bilstm``, this keeps the
  fusion LSTM's input width fixed);
* sizes: the fusion LSTM has one layer of ``hidden_dim`` units (MedFuse: the CXR feature width, 512);
  MedFuse's EHR LSTM has 2 layers of 256 units, ours the configured encoder (one layer of
  ``hidden_dim``, see ``encoders/ehr.py``); dropout ``spec.dropout`` before the classifier;
* **absent CXR (the paper's own mechanism):** the sequence is [v_ehr] of length 1. The fusion LSTM is
  unidirectional, so its state after step 1 depends on v_ehr alone; each stay's output is taken at its
  own length (step 1 without a CXR, step 2 with one), and an absent CXR's slot is exact zeros
  (``torch.where``), so a placeholder is never read — equivalent to packed variable-length sequences.
  ``--missing-token learned`` (``spec.missing_token``; MedFuse's ``--missing_token learnable``
  variant) instead fills the absent slot with a learned vector (in the projected space) and always
  reads length 2.
"""

from __future__ import annotations

import torch
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder, keep_present
from mmfair.core.registry import FUSIONS


class LSTMSequenceFusion(nn.Module):
    """Projection of every modality to a shared width, then a unidirectional LSTM over the modality
    sequence (in the order of ``in_dims``), read at each stay's last present position."""

    def __init__(self, in_dims: dict[str, int], dim: int, missing_token: bool = False) -> None:
        super().__init__()
        self.names = list(in_dims)
        self.project = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in in_dims.items()})
        self.lstm = nn.LSTM(dim, dim, num_layers=1, batch_first=True)
        self.missing_token = nn.Parameter(torch.zeros(len(self.names), dim)) if missing_token else None
        self.out_dim = dim

    def sequence(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        steps = []
        for i, m in enumerate(self.names):
            v = self.project[m](features[m])
            if self.missing_token is not None:
                token = self.missing_token[i].to(v.dtype).expand_as(v)
                v = torch.where(present[m].bool()[:, None], v, token)
            else:
                v = keep_present(v, present[m].bool())
            steps.append(v)
        return torch.stack(steps, dim=1)  # [B, M, dim]

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        seq = self.sequence(features, present)
        if self.missing_token is None:
            # Only a trailing run of absent modalities can be skipped by length; a gap in the middle
            # would need reordering. MedFuse's order [EHR, CXR] with the EHR always present is fine.
            flags = torch.stack([present[m].bool() for m in self.names], dim=1)
            lengths = flags.long().sum(dim=1)
            gap = flags[:, 1:] & ~flags[:, :-1]
            if bool(gap.any()):
                raise ValueError("medfuse: an absent modality before a present one cannot be skipped by length")
        else:
            lengths = torch.full((seq.shape[0],), seq.shape[1], dtype=torch.long, device=seq.device)
        out, _ = self.lstm(seq)  # [B, M, dim]; out[:, t] depends on steps 0..t only
        index = (lengths.clamp_min(1) - 1)[:, None, None].expand(-1, 1, out.shape[2])
        return out.gather(1, index).squeeze(1)


@FUSIONS.register(
    "medfuse",
    summary="MedFuse: LSTM over the modality sequence [EHR, CXR]; an absent CXR shortens the sequence",
    paper="Hayat et al. 2022 (MedFuse, MLHC)",
)
class MedFuse(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True
    accepts_missing_token = True

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        self.fusion = LSTMSequenceFusion(
            {m: self.encoders[m].out_dim for m in self.modalities}, spec.hidden_dim,
            missing_token=spec.missing_token == "learned",
        )
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(self.fusion.out_dim, spec.n_outputs))

    def forward(self, batch: Batch) -> Output:
        embeddings = {m: self.encoders[m](batch["inputs"][m]) for m in self.modalities}
        logits = self.head(self.fusion(embeddings, batch["present"]))
        return Output(logits=logits, embeddings=embeddings)
