"""``aug``: adaptive classifier assignment (AUG) — boost the classifier of the weaker modality.

Paper: Jiang et al. (Jiang, Huang & Yang), "Rethinking Multimodal Learning from the Perspective of
Mitigating Classification Ability Disproportion", NeurIPS 2025 (arXiv 2502.20120); mechanism checked
against the authors' public code. CareBench's version is described in ``reference/carebench.md`` §3 item 8.

Mechanism: the model is ``aug-base`` (``fusion/_aug.py``: modality encoders, one shared classifier,
switchable boosting layers, sustained-boosting loss). Over each epoch this modulator sums, per modality,
the confidence its unimodal logits give the true label, ``s_m = Σ_i p_m(y_i | x_i)``. At the end of
epoch 1 and of every ``check_every``-th epoch it compares ``ρ = s_ehr / s_cxr`` with ``λ ± δ``: ρ > λ + δ
switches on one more boosting layer for the CXR classifier, ρ < λ − δ one more for the EHR classifier
(the weaker modality gets more classification capacity), otherwise nothing changes.

Deviations, stated plainly:
* the chosen layer is switched on at the **start of the next epoch**, not right after the check: the
  trainer validates an epoch before this hook runs and keeps that epoch's weights as a candidate best
  model, so a layer switched on at once would enter the kept weights without having been validated or
  trained. The pending decision is part of ``state_dict`` so a resumed run makes the same one;
* layers are preallocated (``aug-base``'s ``max_boost``) and, once switched on, trained by the run's
  optimiser — CareBench's added layers never train (its defect, not copied); at most ``max_boost`` layers
  per modality (the code has no cap);
* the confidences are summed over the stays that have both modalities, so an absent CXR cannot bias the
  ratio; an epoch without such a stay makes no decision. Binary and multilabel tasks use the sigmoid
  probability of the true value of each label (mean over labels), multiclass the softmax probability;
* the unimodal confidences come from the training forward passes of the epoch (train mode, parameters
  changing within the epoch), as in the authors' code.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from mmfair.core.errors import ConfigError
from mmfair.core.fusion import AUGNet
from mmfair.core.registry import MODULATORS
from mmfair.core.modulators._base import Groups, Modulator, ModulatorParams
from mmfair.core.modulators.ogm_ge import true_label_confidence


class AUGModulatorParams(ModulatorParams):
    lam: float = Field(1.0, gt=0, description="λ: target ratio of summed EHR / CXR true-label confidence")
    delta: float = Field(0.01, ge=0, description="δ: tolerance band around λ in which nothing is switched on")
    check_every: int = Field(5, ge=1, description="T_check: compare the ratio after epoch 1 and every T_check epochs")


def weaker_modality(ratio: float, lam: float, delta: float) -> str | None:
    """The modality to boost for ``ratio = s_ehr / s_cxr``: 'cxr' above λ + δ, 'ehr' below λ − δ, else None."""
    if ratio > lam + delta:
        return "cxr"
    if ratio < lam - delta:
        return "ehr"
    return None


@MODULATORS.register(
    "aug",
    summary="AUG: adaptive classifier assignment — boosting layers for the modality with lower true-label confidence",
    paper="Jiang et al., NeurIPS 2025 (arXiv 2502.20120)",
)
class AUG(Modulator):
    Params = AUGModulatorParams
    #: ``mmfair study``: CareBench's ranges (reference/carebench.md §3 item 8: λ ∈ [0.8, 1.2], δ ∈ [0.005, 0.05],
    #: T_check ∈ {5, 10, 15}); its α belongs to ``aug-base`` and is that method's own space
    search_space = {"lam": ("float", 0.8, 1.2), "delta": ("log", 0.005, 0.05), "check_every": ("choice", [5, 10, 15])}
    name = "aug"

    def setup(self, model: Any, task: Any, train: Any, config: Any, groups: Groups | None, device: torch.device) -> None:
        super().setup(model, task, train, config, groups, device)
        if not isinstance(model, AUGNet):
            raise ConfigError(f"modulator 'aug' needs the 'aug-base' architecture (switchable boosting layers), "
                              f"not {config.fusion}; use --fusion aug")
        self.model = model
        self.pending: str | None = None
        self._reset_scores()

    def _reset_scores(self) -> None:
        self.scores = {m: 0.0 for m in self.model.modalities}

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if self.pending is not None:
            self.model.activate_boost(self.pending)
            self.pending = None
        self._reset_scores()

    def loss(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        paired = torch.stack([batch["present"][m].bool() for m in model.modalities]).all(dim=0)
        if bool(paired.any()):
            with torch.no_grad():
                for m in model.modalities:
                    confidence = true_label_confidence(task, output.unimodal_logits[m][paired].detach(), batch["labels"][paired])
                    self.scores[m] = self.scores[m] + confidence.sum().double()  # a tensor: no sync per step
        return model.training_loss(output, batch, task)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        if epoch == 1 or epoch % self.params.check_every == 0:
            ehr_score, cxr_score = float(self.scores["ehr"]), float(self.scores["cxr"])
            if cxr_score > 0:
                ratio = ehr_score / cxr_score
                self.log_value("ratio", ratio)
                self.pending = weaker_modality(ratio, self.params.lam, self.params.delta)
        for m in self.model.modalities:
            planned = self.model.n_active(m) + int(self.pending == m)
            self.log_value(f"boost_layers[{m}]", min(planned, self.model.params.max_boost))
        return super().on_epoch_end(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"pending": -1 if self.pending is None else self.model.modalities.index(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        index = int(state["pending"])
        self.pending = None if index < 0 else self.model.modalities[index]
