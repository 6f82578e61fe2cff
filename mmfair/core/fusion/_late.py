"""``late``: decision-level (late) fusion by averaging the probabilities of the modalities present.

Paper: late fusion as defined in Baltrušaitis, Ahuja & Morency, "Multimodal Machine Learning: A Survey
and Taxonomy" (IEEE TPAMI 2019) and Huang et al., "Fusion of medical imaging and electronic health
records using deep learning: a systematic review" (npj Digit. Med. 2020): one model per modality, each
trained with its own loss, and an aggregation rule (here the mean) over their predictions.

Mechanism and deviations:
* one unimodal model per modality (EHR encoder + linear head; CXR embedding MLP + linear head), the
  same architectures as ``ehr`` and ``cxr``;
* they are trained **in one loop, on the sum of the unimodal losses**; the CXR loss counts only stays
  with a CXR. The fused prediction does not enter the loss, gradients are clipped per branch and AdamW
  is per parameter, so nothing crosses between the branches; each branch keeps the weights of its own
  best validation epoch and stops on its own patience (``independent_branches``). This equals separate
  training except that the branches share the batch order (the CXR branch sees only the stays with a
  CXR in each batch);
* prediction = mean of the **probabilities** of the modalities present (EHR alone when the CXR is
  absent; softmax probabilities for a multiclass task), returned as ``logits = logit(mean p)``
  (log-mean-exp of log-probabilities for multiclass) so that sigmoid/softmax gives the probability
  back. Absent modalities are removed from the mean with ``present``, never fed a zeros image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder
from mmfair.core.registry import FUSIONS


def average_probability_logits(
    logits: dict[str, torch.Tensor], present: dict[str, torch.Tensor], output_kind: str
) -> torch.Tensor:
    """Logits of the mean probability over the present modalities, computed in log space (stable)."""
    names = list(logits)
    z = torch.stack([logits[m].float() for m in names])  # [M, B, K]
    mask = torch.stack([present[m].bool() for m in names])[:, :, None].expand_as(z)
    neg_inf = torch.tensor(float("-inf"), device=z.device)
    if output_kind == "softmax":
        log_p = torch.where(mask, F.log_softmax(z, dim=-1), neg_inf)
        return torch.logsumexp(log_p, dim=0)  # log of the sum; the count cancels in the softmax
    log_p = torch.where(mask, F.logsigmoid(z), neg_inf)
    log_q = torch.where(mask, F.logsigmoid(-z), neg_inf)
    return torch.logsumexp(log_p, dim=0) - torch.logsumexp(log_q, dim=0)


@FUSIONS.register(
    "late",
    summary="late fusion: mean of the unimodal probabilities of the modalities present",
    paper="Baltrušaitis et al. 2019 (survey); Huang et al. 2020 (fusion review)",
)
class LateFusion(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True
    independent_branches = ("ehr", "cxr")

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        self.heads = nn.ModuleDict({m: nn.Linear(self.encoders[m].out_dim, spec.n_outputs) for m in self.modalities})

    def forward(self, batch: Batch) -> Output:
        embeddings = {m: self.encoders[m](batch["inputs"][m]) for m in self.modalities}
        unimodal = {m: self.heads[m](embeddings[m]) for m in self.modalities}
        logits = average_probability_logits(unimodal, batch["present"], self.spec.output_kind)
        return Output(logits=logits, embeddings=embeddings, unimodal_logits=unimodal)

    def training_loss(self, output: Output, batch: Batch, task) -> torch.Tensor:
        """Sum of the unimodal losses, each over the stays where its modality is present."""
        loss = output.logits.new_zeros(())
        for m in self.modalities:
            loss = loss + task.loss(output.unimodal_logits[m], batch["labels"], batch["present"][m])
        for aux in output.aux_losses.values():
            loss = loss + aux
        return loss
