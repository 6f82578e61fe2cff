"""A third-party fusion method: the mean of the present modalities' embeddings, then a linear head.

Registering is importing: ``@FUSIONS.register`` adds the class under its name, and the entry point in
pyproject.toml makes mmfair import this module, so after ``pip install examples/plugin_method``
``mmfair train --fusion plugin-mean`` works and ``mmfair list fusions`` lists it.

Paper: none (an example). Deviations: none.
"""

import torch
from torch import nn

from mmfair.plugins import FUSIONS, FusionModel, Output, build_modality_encoder


@FUSIONS.register("plugin-mean", summary="mean of present embeddings (example plugin)", paper="none")
class MeanFusion(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True  # an absent modality is left out of the mean, never imputed

    def __init__(self, spec):
        super().__init__(spec)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        self.head = nn.Linear(spec.hidden_dim, spec.n_outputs)

    def forward(self, batch):
        embeddings = {m: self.encoders[m](batch["inputs"][m]) for m in self.modalities}
        weights = torch.stack([batch["present"][m].float() for m in self.modalities], dim=1)
        stacked = torch.stack([embeddings[m] for m in self.modalities], dim=1) * weights[..., None]
        pooled = stacked.sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
        return Output(logits=self.head(pooled), embeddings=embeddings)
