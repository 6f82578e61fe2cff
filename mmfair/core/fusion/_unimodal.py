"""Single-modality baselines: ``ehr`` (EHR encoder + linear head) and ``cxr`` (MLP on the cached embedding).

``ehr`` follows the LSTM baseline of MedFuse (Hayat et al., MLHC 2022; see ``encoders/ehr.py`` for the
encoder and its deviations). ``cxr`` follows MedFuse's CXR-only baseline in spirit, with the deviation
that the image backbone is frozen: it trains a LayerNorm → Linear → ReLU → Dropout → Linear head on the
cached ``/cxr/embeddings/<id>`` vectors instead of fine-tuning a ResNet-34 end to end.
``cxr`` has ``handles_missing=False``: it trains on the stays with a CXR and writes an empty score for
the others (the evaluator marks those rows ``defined=false``); unlike CareBench it never scores a
zeros image.
"""

from __future__ import annotations

from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder
from mmfair.core.registry import FUSIONS


class UnimodalModel(FusionModel):
    modality: str = "ehr"

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        encoder = build_modality_encoder(self.modality, spec)
        self.encoders = nn.ModuleDict({self.modality: encoder})
        self.head = nn.Linear(encoder.out_dim, spec.n_outputs)

    def forward(self, batch: Batch) -> Output:
        embedding = self.encoders[self.modality](batch["inputs"][self.modality])
        logits = self.head(embedding)
        return Output(logits=logits, embeddings={self.modality: embedding}, unimodal_logits={self.modality: logits})


@FUSIONS.register("ehr", summary="EHR only: sequence encoder + linear head", paper="Hayat et al. 2022 (MedFuse, LSTM baseline)")
class EHROnly(UnimodalModel):
    modality = "ehr"
    modalities = ("ehr",)
    handles_missing = False  # irrelevant: the EHR is always present


@FUSIONS.register("cxr", summary="CXR only: MLP on the cached image embedding", paper="Hayat et al. 2022 (MedFuse, CXR baseline)")
class CXROnly(UnimodalModel):
    modality = "cxr"
    modalities = ("cxr",)
    handles_missing = False
