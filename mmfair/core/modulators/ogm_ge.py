"""``ogm-ge``: on-the-fly gradient modulation with generalisation enhancement.

Paper: Peng et al. (Peng, Wei, Deng, Wang & Hu), "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022 (arXiv 2203.15332); mechanism checked against the authors' public code.

Mechanism: per batch, each modality's score is the confidence the unimodal prediction gives the true
label, ``s_m = mean_i p_m(y_i | x_i)``; with ``ρ_m = s_m / s_weakest`` the dominant modality (ρ_m > 1)
gets the coefficient ``k_m = 1 − tanh(α ρ_m)`` and every other modality ``k_m = 1`` — so k ∈ (0, 1] and
the weaker modality is never slowed down. After backward, every encoder gradient of modality m is
multiplied by k_m and (GE) Gaussian noise ``N(0, σ²)`` is added, σ being the standard deviation of that
tensor's original gradient; this happens on every step of the modulation window (epochs
``start_epoch..end_epoch``), noise included even where k = 1, as in the authors' code.

Where the unimodal predictions come from (composability): if the model's ``Output.unimodal_logits``
holds every modality (e.g. ``late``), those are used, as the paper splits its own fused classifier. A
model without them (e.g. ``early``, whose fusion is an MLP that cannot be split into per-modality parts
like the paper's concatenation + linear layer) gets one linear probe per modality, owned by the
modulator and trained on the **detached** modality embeddings (``Output.embeddings``) with its own AdamW
— the probe's confidence stands in for the modality's share of the fused prediction.

Deviations, stated plainly:
* the probes above, for models whose fused layer cannot be split (the paper assumes a linear
  concatenation head);
* the score is the batch *mean* (the paper and code use the batch sum; the ratio is the same) and is
  taken over the stays that have every modality, so an absent CXR cannot bias the ratio; a batch with
  no such stay leaves every coefficient at 1;
* for more than two modalities the ratio is taken against the weakest modality (the paper has two);
* binary/multilabel tasks use the sigmoid probability of the true value of each label (mean over
  labels), multiclass the softmax probability of the true class;
* the coefficient scales every tensor of the modality's encoder (weights, biases, norms) and the noise
  goes to every tensor with more than one element; the authors' code touches only 4-D (convolution)
  weights, which the benchmark's encoders (LSTM, Transformer, MLP on cached CXR embeddings) do not have;
* the noise draws from a generator seeded by the run seed (so the model's own random stream is the
  one of plain training); k is computed in float64 as ``2 / (1 + exp(2 α ρ))`` so it stays > 0;
* optimizer: the paper and the authors' code use SGD (momentum 0.9, weight decay 1e-4); here the
  coefficient is applied under the *base method's* optimizer (AdamW by default) through the encoder's
  learning rate (``modulate_via=lr``, the default): k scales the encoder's actual update, which a gradient
  factor under AdamW would not (Adam divides it away; only its step-to-step changes, the noise and the
  clipping would act). In lr mode the noise is added as ``N(0, σ²)/k`` so that the update is the grad
  mode's under SGD (``k·lr·g + lr·noise``). The paper's setting is ``--optimizer sgd --modulate-via grad``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import nn

from mmfair.core.errors import ConfigError
from mmfair.core.registry import MODULATORS
from mmfair.core.modulators._base import (
    Groups,
    Modulator,
    ModulatorParams,
    encoder_groups,
    multimodal_modalities,
)


class OGMGEParams(ModulatorParams):
    alpha: float = Field(0.1, gt=0, description="modulation strength α in k = 1 - tanh(α ρ)")
    start_epoch: int = Field(1, ge=1, description="first epoch of the modulation window")
    end_epoch: int = Field(50, ge=1, description="last epoch of the modulation window")
    noise: bool = Field(True, description="GE: add Gaussian noise with the gradient's own std")
    probe_lr: float | None = Field(None, gt=0, description="lr of the linear probes (default: the run's lr)")


def ogm_coefficients(scores: dict[str, float], alpha: float) -> dict[str, float]:
    """``k_m = 1 − tanh(α ρ_m)`` for ρ_m = s_m / min_k s_k > 1, else 1 (k ∈ (0, 1])."""
    weakest = min(scores.values())
    out = {}
    for m, s in scores.items():
        if weakest <= 0 or not math.isfinite(s) or s <= weakest:
            out[m] = 1.0
            continue
        x = min(alpha * s / weakest, 300.0)
        out[m] = 2.0 / (1.0 + math.exp(2.0 * x))  # = 1 − tanh(x), without cancellation
    return out


def true_label_confidence(task: Any, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row probability of the true label (mean over labels for binary/multilabel)."""
    logits = logits.float()
    if task.kind == "multiclass":
        return torch.softmax(logits, dim=1).gather(1, labels.long().reshape(-1, 1)).reshape(-1)
    p = torch.sigmoid(logits)
    y = labels.float().reshape(p.shape)
    return torch.where(y > 0.5, p, 1 - p).mean(dim=1)


def unimodal_heads(model: Any, train: Any, modalities: tuple[str, ...] | list[str], seed: int,
                   device: torch.device) -> nn.ModuleDict | None:
    """One linear head per modality on its detached embedding, for a model that returns no unimodal logits of
    its own (None when it does). Initialised from ``seed`` in a forked random stream, so the model's own stream
    stays that of plain training."""
    probe = probe_output(model, train)
    if all(m in probe.unimodal_logits for m in modalities):
        return None
    dims = embedding_dims(model, probe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = nn.ModuleDict({m: nn.Linear(dims[m], probe.logits.shape[1]) for m in modalities})
    return heads.to(device)


def probe_output(model: Any, train: Any) -> Any:
    """One eval-mode forward on two training rows (no RNG drawn, no running statistics updated)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(train.batch(slice(0, 2)))
    model.train(was_training)
    return out


def embedding_dims(model: Any, output: Any) -> dict[str, int]:
    """Embedding width of each modality; a model without embeddings for one is a ConfigError."""
    missing = [m for m in model.modalities if m not in output.embeddings]
    if missing:
        raise ConfigError(f"model {type(model).__name__} returns no embeddings for {', '.join(missing)}; this modulator needs them")
    return {m: int(output.embeddings[m].shape[-1]) for m in model.modalities}


@MODULATORS.register(
    "ogm-ge",
    summary="OGM-GE: damp the dominant modality's encoder gradients (k = 1 − tanh(α ρ)) + Gaussian noise",
    paper="Peng et al., CVPR 2022",
)
class OGMGE(Modulator):
    Params = OGMGEParams
    #: ``mmfair study``: α is 0.1 in the authors' README and 0.3 in BalanceBenchmark, "tuned per dataset"
    #: (reference/multifair.md §3.1)
    search_space = {"alpha": ("log", 0.05, 1.0)}
    name = "ogm-ge"
    scales_gradients = True

    def setup(self, model: Any, task: Any, train: Any, config: Any, groups: Groups | None, device: torch.device) -> None:
        super().setup(model, task, train, config, groups, device)
        self.modalities = multimodal_modalities(model, config, "ogm-ge")
        self.encoders = encoder_groups(model, self.modalities)
        self.task = task
        self.coefficients = {m: 1.0 for m in self.modalities}
        self.generator = torch.Generator(device=device).manual_seed(int(config.seed))
        self.probes = unimodal_heads(model, train, self.modalities, int(config.seed) + 7919, device)
        if self.probes is not None:
            self.probe_opt = torch.optim.AdamW(self.probes.parameters(), lr=self.params.probe_lr or config.lr,
                                               weight_decay=config.weight_decay)

    def _active(self) -> bool:
        return self.params.start_epoch <= getattr(self, "epoch", 1) <= self.params.end_epoch

    def unimodal_logits(self, output: Any, batch: dict[str, Any], task: Any) -> dict[str, torch.Tensor]:
        if self.probes is None:
            return {m: output.unimodal_logits[m].detach().float() for m in self.modalities}
        with torch.autocast(device_type=output.logits.device.type, enabled=False):
            logits = {m: self.probes[m](output.embeddings[m].detach().float()) for m in self.modalities}
            loss = sum(task.loss(logits[m], batch["labels"], batch["present"][m]) for m in self.modalities)
            self.probe_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.probe_opt.step()
        return {m: z.detach() for m, z in logits.items()}

    def loss(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        uni = self.unimodal_logits(output, batch, task)
        paired = torch.stack([batch["present"][m].bool() for m in self.modalities]).all(dim=0)
        if self._active() and bool(paired.any()):
            scores = {m: float(true_label_confidence(task, uni[m][paired], batch["labels"][paired]).mean())
                      for m in self.modalities}
            self.coefficients = ogm_coefficients(scores, self.params.alpha)
        else:
            self.coefficients = {m: 1.0 for m in self.modalities}
        return model.training_loss(output, batch, task)

    @torch.no_grad()
    def after_backward(self, model: Any, output: Any, batch: dict[str, Any]) -> None:
        if not self._active():  # coefficients are 1 here: nothing scaled, no noise; the factor is still logged
            self.scale_encoders(self.encoders, self.coefficients)
            return
        stds = {m: [p.grad.float().std() if p.grad is not None and p.grad.numel() > 1 else None for p in params]
                for m, params in self.encoders.items()}  # of the original gradients, as the authors' code
        self.scale_encoders(self.encoders, self.coefficients)
        if not self.params.noise:
            return
        for m, params in self.encoders.items():
            scale = self.additive_scale(m)
            for p, std in zip(params, stds[m]):
                if p.grad is not None and std is not None and torch.isfinite(std):
                    noise = torch.randn(p.grad.shape, generator=self.generator, device=p.grad.device, dtype=torch.float32)
                    p.grad.add_((noise * (std * scale)).to(p.grad.dtype))

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        if self.probes is not None:
            state["probes"] = self.probes.state_dict()
            state["probe_opt"] = self.probe_opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if self.probes is not None and "probes" in state:
            self.probes.load_state_dict(state["probes"])
            self.probe_opt.load_state_dict(state["probe_opt"])
