"""``inforeg``: information acquisition regulation in the prime learning window (InfoReg).

Paper: Huang et al. (Huang, Wei, Yang & Hu), "Adaptive Unimodal Regulation for Balanced Multimodal
Information Acquisition", CVPR 2025 (arXiv 2503.18595); mechanism checked against the authors' public
code. CareBench's simplified version is described in ``reference/carebench.md`` §3 item 9.

Mechanism:
* **information acquisition** of modality m is tracked by the trace of its encoder's (empirical)
  Fisher information, ``tr F_m = Σ_tensors mean(g²)`` averaged over the steps of an epoch, kept as an
  epoch-level history;
* **prime learning window**: at the start of each epoch, ``k_m = (mean(h_m[−T:]) − mean(h_m[−T−1:−1])) /
  mean(h_m[−T:])`` (T = ``history``) — the relative growth of the trace; modality m is in its window
  while ``k_m > k_threshold`` (always during the first two epochs, before a trend exists);
* per batch, ``s_m`` is the mean confidence the unimodal prediction of m gives the true label (over the
  stays with every modality); the dominant (information-sufficient) modality d is the one with the
  highest score, ``gap = tanh(s_d − s_weakest)``. While d is in its window its encoder is regulated:
  - **proximal regularisation toward the previous global state** (the paper's regulation term):
    ``∇ += β (θ − θ̄)``, θ̄ = the encoder's parameters at the start of the epoch and
    ``β = proximal_strength · exp(gap)`` — the gradient of ``β/2 ‖θ − θ̄‖²``, pulling d back toward
    where it was so it acquires information more slowly. CareBench's version lacks this term;
  - a **gradient slow-down** ``∇ ← (1 − min(γ·gap, max_slowdown)) ∇`` of the task gradient before the
    proximal term (CareBench's simplified regulation; ``slowdown_gamma = 0`` switches it off).
* unimodal logits: a model's own ``unimodal_logits`` when it has them for every modality (e.g. ``late``);
  otherwise one linear head per modality, as the paper's architecture has, whose loss is added to the
  model's (joint + unimodal losses). The heads belong to the modulator and are stepped by their own
  AdamW on the detached embedding; the encoders get the unimodal gradient through a copy of the heads'
  weights, so the trainer's AMP scaling never reaches the heads.

Deviations, stated plainly:
* the slow-down factor is an addition (CareBench's simplified regulation, kept as a second lever; the
  paper regulates with the proximal term alone — ``slowdown_gamma = 0`` gives the paper's form);
* the paper's authors use a fixed β per modality (0.95 for their dominant audio, 0.1 for visual); here one
  ``proximal_strength`` applies to whichever modality is dominant in the batch;
* ``gap`` uses the *mean* confidence (the code's batch sums saturate tanh at any realistic batch size);
* the Fisher trace is taken from the gradients before the regulation (the code after the proximal term)
  over every encoder tensor with ≥ 2 dimensions (the code: Conv/Linear weights), averaged (not summed)
  over steps, which leaves k unchanged; the history is per epoch as in the paper (CareBench: per step);
* every modality's window is tracked (the code tracks only the audio trace, its known dominant one);
* θ̄ is re-taken at every epoch start, as the code does (``deepcopy(model)`` per epoch); a resumed run
  re-takes it from the checkpoint weights, which are the same;
* scores use the stays with every modality, so an absent CXR cannot bias the choice of d; binary and
  multilabel tasks use the sigmoid probability of each label's true value (mean over labels);
* optimizer: the authors' code uses SGD; here the slow-down factor is applied under the base method's
  optimizer through the regulated encoder's learning rate (``modulate_via=lr``, the default; the proximal
  gradient is then added as β(θ − θ̄)/factor, so under SGD the update equals the grad mode's);
  ``--optimizer sgd --modulate-via grad`` is the code's form. The proximal term is a gradient either way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import nn

from mmfair.core.registry import MODULATORS
from mmfair.core.modulators._base import (
    Groups,
    Modulator,
    ModulatorParams,
    encoder_groups,
    multimodal_modalities,
)
from mmfair.core.modulators.ogm_ge import true_label_confidence, unimodal_heads


class InfoRegParams(ModulatorParams):
    k_threshold: float = Field(0.04, description="the window is open while the relative trace growth k exceeds this")
    history: int = Field(10, ge=1, description="T: epochs averaged on each side of the trace comparison")
    proximal_strength: float = Field(0.95, ge=0, description="β = proximal_strength · exp(gap) of the proximal term")
    slowdown_gamma: float = Field(0.5, ge=0, description="γ of the slow-down factor 1 − min(γ·gap, max_slowdown); 0 = off")
    max_slowdown: float = Field(0.9, ge=0, lt=1, description="largest share of the gradient the slow-down removes")
    unimodal_weight: float = Field(1.0, ge=0, description="weight of the unimodal head losses (models without unimodal logits)")


def relative_trace_growth(history: list[float], window: int) -> float:
    """``k = (mean(h[−T:]) − mean(h[−T−1:−1])) / mean(h[−T:])``; 1 (window open) before two epochs exist."""
    if len(history) < 2:
        return 1.0
    recent = sum(history[-window:]) / len(history[-window:])
    earlier = history[-window - 1 : -1]
    previous = sum(earlier) / len(earlier)
    if recent <= 0 or not math.isfinite(recent):
        return 0.0
    return (recent - previous) / recent


def slowdown_factor(gap: float, gamma: float, max_slowdown: float) -> float:
    return 1.0 - min(gamma * gap, max_slowdown)


@torch.no_grad()
def add_proximal_gradient(params: list[nn.Parameter], anchors: list[torch.Tensor], beta: float) -> None:
    """``grad += β (θ − θ̄)``: the gradient of ``β/2 ‖θ − θ̄‖²``. A parameter the step did not use (grad
    None) is left alone: giving it a gradient would let AdamW's weight decay move it."""
    for p, anchor in zip(params, anchors):
        if p.grad is not None:
            p.grad.add_((p.detach() - anchor).mul_(beta).to(p.grad.dtype))


@MODULATORS.register(
    "inforeg",
    summary="InfoReg: in the prime learning window (Fisher-trace growth), slow the dominant modality's encoder "
            "and pull it toward its previous state",
    paper="Huang et al., CVPR 2025 (arXiv 2503.18595)",
)
class InfoReg(Modulator):
    scales_gradients = True
    Params = InfoRegParams
    #: ``mmfair study``: CareBench's ranges (reference/carebench.md §3 item 9: k_thr ∈ [0.01, 0.1], T_hist ∈ {5, 10,
    #: 15}, its slow-down γ ∈ [0.05, 1.5] over both modalities) and the authors' proximal β of 0.1 (visual) to 0.95
    #: (audio) (reference/multifair.md §3.1)
    search_space = {"k_threshold": ("float", 0.01, 0.1), "history": ("choice", [5, 10, 15]),
                    "slowdown_gamma": ("float", 0.05, 1.5), "proximal_strength": ("log", 0.1, 1.0)}
    name = "inforeg"

    def setup(self, model: Any, task: Any, train: Any, config: Any, groups: Groups | None, device: torch.device) -> None:
        super().setup(model, task, train, config, groups, device)
        self.modalities = multimodal_modalities(model, config, "inforeg")
        self.encoders = encoder_groups(model, self.modalities)
        self.traces: dict[str, list[float]] = {m: [] for m in self.modalities}
        self.window = {m: True for m in self.modalities}
        self._step_traces: dict[str, list[torch.Tensor]] = {m: [] for m in self.modalities}
        self.regulated: tuple[str, float] | None = None
        self.anchors: dict[str, list[torch.Tensor]] = {}
        self.heads = unimodal_heads(model, train, self.modalities, int(config.seed) + 104729, device)
        if self.heads is not None:
            self.head_opt = torch.optim.AdamW(self.heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        for m in self.modalities:
            k = relative_trace_growth(self.traces[m], self.params.history)
            self.window[m] = k > self.params.k_threshold
            self.log_value(f"k[{m}]", k)
            self.log_value(f"window[{m}]", float(self.window[m]))
        self.anchors = {m: [p.detach().clone() for p in params] for m, params in self.encoders.items()}
        self._step_traces = {m: [] for m in self.modalities}

    # ---- unimodal predictions ------------------------------------------------------------------
    def _unimodal(self, output: Any, batch: dict[str, Any], task: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Unimodal logits (detached) and the unimodal loss to add to the model's (None for a model with its own)."""
        if self.heads is None:
            return {m: output.unimodal_logits[m].detach().float() for m in self.modalities}, None
        present, labels = batch["present"], batch["labels"]
        extra = None
        with torch.autocast(device_type=output.logits.device.type, enabled=False):
            logits = {m: self.heads[m](output.embeddings[m].detach().float()) for m in self.modalities}
            head_loss = sum(task.loss(logits[m], labels, present[m]) for m in self.modalities)
            for m in self.modalities:  # the encoders learn the unimodal task through a frozen copy of the head
                head = self.heads[m]
                z = nn.functional.linear(output.embeddings[m].float(), head.weight.detach().clone(), head.bias.detach().clone())
                term = task.loss(z, labels, present[m])
                extra = term if extra is None else extra + term
            self.head_opt.zero_grad(set_to_none=True)
            head_loss.backward()
            self.head_opt.step()
        return {m: z.detach() for m, z in logits.items()}, self.params.unimodal_weight * extra

    def loss(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        base = model.training_loss(output, batch, task)
        uni, extra = self._unimodal(output, batch, task)
        paired = torch.stack([batch["present"][m].bool() for m in self.modalities]).all(dim=0)
        self.regulated = None
        if bool(paired.any()):
            scores = {m: float(true_label_confidence(task, uni[m][paired], batch["labels"][paired]).mean())
                      for m in self.modalities}
            dominant = max(scores, key=scores.get)
            gap = math.tanh(scores[dominant] - min(scores.values()))
            if gap > 0 and self.window[dominant]:
                self.regulated = (dominant, gap)
        for m in self.modalities:
            self.log_value(f"regulated[{m}]", float(self.regulated is not None and self.regulated[0] == m))
        return base if extra is None else base + extra.to(base.dtype)

    @torch.no_grad()
    def after_backward(self, model: Any, output: Any, batch: dict[str, Any]) -> None:
        for m, params in self.encoders.items():  # kept on the device: no synchronisation per step
            squares = [p.grad.float().pow(2).mean() for p in params if p.grad is not None and p.dim() >= 2]
            if squares:
                self._step_traces[m].append(torch.stack(squares).sum())
        factors = dict.fromkeys(self.modalities, 1.0)
        if self.regulated is not None:
            factors[self.regulated[0]] = slowdown_factor(self.regulated[1], self.params.slowdown_gamma, self.params.max_slowdown)
        self.scale_encoders(self.encoders, factors)
        if self.regulated is None:
            return
        m, gap = self.regulated
        factor = factors[m]
        beta = self.params.proximal_strength * math.exp(gap) * self.additive_scale(m)
        add_proximal_gradient(self.encoders[m], self.anchors[m], beta)
        self.log_value(f"slowdown[{m}]", factor)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        for m in self.modalities:
            steps = self._step_traces[m]
            if steps:
                self.traces[m].append(float(torch.stack(steps).mean()))
                self.log_value(f"fisher_trace[{m}]", self.traces[m][-1])
        return super().on_epoch_end(epoch)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {f"traces:{m}": torch.tensor(self.traces[m], dtype=torch.float64) for m in self.modalities}
        if self.heads is not None:
            state["heads"] = self.heads.state_dict()
            state["head_opt"] = self.head_opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.traces = {m: state[f"traces:{m}"].tolist() for m in self.modalities}
        if self.heads is not None and "heads" in state:
            self.heads.load_state_dict(state["heads"])
            self.head_opt.load_state_dict(state["head_opt"])
