"""``early``: feature concatenation with a presence indicator, then an MLP.

Paper: early/feature-level fusion as defined in Baltrušaitis, Ahuja & Morency (IEEE TPAMI 2019) and
Huang et al. (npj Digit. Med. 2020). Deviations, stated plainly:
* the features are not raw inputs but learned embeddings (EHR sequence encoder; an MLP on the cached
  CXR embedding) trained end to end through the fused loss — what Huang et al. call *joint* fusion
  (type I). The benchmark keeps the common name ``early`` for "concatenate, then one shared head";
* **missing-modality mechanism (DESIGN §5):** each modality's embedding is replaced by a zero vector
  when the modality is absent (``torch.where`` on ``present``, so placeholder values never matter), and
  one presence indicator (0/1) per modality is appended, so the MLP can tell "absent" from "zero";
  ``--missing-token learned`` puts a learned vector (MedFuse's learnable token) in the absent slot instead;
* fusion MLP: Linear(M·H + M, H) → ReLU → Dropout, then a linear head.
"""

from __future__ import annotations

import torch
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder
from mmfair.core.registry import FUSIONS


@FUSIONS.register(
    "early",
    summary="early (joint) fusion: concatenated embeddings × presence + presence indicators → MLP",
    paper="Baltrušaitis et al. 2019 (survey); Huang et al. 2020 (fusion review)",
)
class EarlyFusion(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True
    accepts_missing_token = True

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        self.init_missing_tokens({"cxr": self.encoders["cxr"].out_dim})
        width = sum(e.out_dim for e in self.encoders.values()) + len(self.modalities)
        self.fusion = nn.Sequential(nn.Linear(width, spec.hidden_dim), nn.ReLU(), nn.Dropout(spec.dropout))
        self.head = nn.Linear(spec.hidden_dim, spec.n_outputs)

    def forward(self, batch: Batch) -> Output:
        present = batch["present"]
        embeddings = {m: self.encoders[m](batch["inputs"][m]) for m in self.modalities}
        parts = [self.fill_absent(m, embeddings[m], present[m]) for m in self.modalities]
        dtype = parts[0].dtype
        parts += [present[m].to(dtype)[:, None] for m in self.modalities]
        logits = self.head(self.fusion(torch.cat(parts, dim=1)))
        return Output(logits=logits, embeddings=embeddings)
