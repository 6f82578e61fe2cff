"""The modulator hook protocol (DESIGN §5): training strategies that change losses or gradients.

A modulator is registered in ``MODULATORS`` as a subclass of :class:`Modulator`; the trainer builds one
per run (``build_modulator(name, params)``) and calls its hooks when ``TrainConfig.modulator`` is set::

    setup(model, task, train, config, groups, device)   # once, before the first epoch (and before a resume)
    for each epoch:
        on_epoch_start(epoch)                           # 1-based epoch number
        batch_order(rows, generator) -> rows | None      # the epoch's row order (None: a random permutation)
        for each batch:
            output = model(batch)                       # batch["groups"]: int codes of config.fair_attr,
            loss = loss(model, output, batch, task)     #   present only for group-aware modulators
            backward (+ GradScaler.unscale_ on AMP)
            after_backward(model, output, batch)        # may rescale / perturb gradients per group
            gradient clipping
            optimizer step with lr_factors() applied    # per-encoder learning-rate factors (modulate_via=lr)
        on_epoch_end(epoch) -> dict[str, float]          # diagnostics, added to history.csv as modulator_*
    state_dict() / load_state_dict(state)               # in checkpoint.pt, so a resumed run continues exactly

``loss`` defaults to the model's own ``training_loss`` (so a modulator that only touches gradients keeps
every method's loss, aux losses included). ``after_backward`` runs after the AMP unscale and before
clipping, so coefficients act on true gradients. The sensitive group of each stay (``batch["groups"]``,
long [B], codes ``0..n_groups-1`` in the order of ``groups.names``) is given to modulators with
``needs_groups = True`` only, and never to the model as an input (models ignore the key).

Parameter groups come from ``model.param_groups()`` (``encoder:<modality>``, ``fusion``, ``head``);
modulators resolve the groups they need explicitly and raise :class:`ConfigError` when one is missing or
empty — silent name matching is what disabled the direction term of MultiFair's public code.

**Gradient-scaling modulators** (``scales_gradients = True``: OGM-GE, CGGM, MultiFair, InfoReg) compute a
factor per modality each step and hand it to :meth:`Modulator.scale_encoders`, which applies it as
``TrainConfig.modulate_via`` says (reference/multifair.md §4.1):

* ``lr`` (default): the trainer's optimizer has one parameter group per ``encoder:<modality>``; for the
  next step that group's learning rate is the base rate × the factor, then restored. Adam/AdamW divide
  each parameter's step by its own gradient scale, so a factor on the *gradient* is normalised away, while
  a factor on the *learning rate* scales the actual update (decoupled weight decay included). Gradient
  clipping sees the unscaled gradients. Under plain SGD (no momentum) both modes give the same update.
* ``grad``: the encoder's gradients are multiplied by the factor before clipping — the papers' own form
  (OGM-GE was tuned with SGD, where it is equivalent); under Adam/AdamW only the factor's step-to-step
  changes, the clipping and any added noise survive.

An additive gradient term that belongs *outside* the factor (OGM-GE's noise, InfoReg's proximal pull) is
multiplied by :meth:`Modulator.additive_scale` (1/factor in ``lr`` mode, at most 1e3), so the final update
equals the ``grad`` mode's under SGD and keeps its noise-to-signal ratio under Adam (gradient clipping then
sees that term enlarged by 1/factor: < 2 for InfoReg's default slow-down, 1.0-1.4 for OGM-GE's α = 0.1 at
confidence ratios up to 3). Each applied factor is logged
as ``modulator_factor[<modality>]`` (the epoch's mean) in history.csv.

Helpers for reweighting: :class:`RowWeightedTask` wraps a task so that the model's ``training_loss``
(whatever masks it applies: scorable stays, present modalities) becomes a per-row weighted mean, so a
reweighting modulator composes with any method without knowing its loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError

from mmfair.core.evaluation.groups import MISSING_GROUP
from mmfair.core.errors import ConfigError
from mmfair.core.registry import MODULATORS


class ModulatorParams(BaseModel):
    """Base of every modulator's hyperparameters (frozen, unknown keys rejected)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class Groups:
    """The sensitive attribute used in training: codes per training row and the group names."""

    attribute: str
    names: tuple[str, ...]
    codes: torch.Tensor  # long [n_train_rows], aligned with the training split's rows

    @property
    def n_groups(self) -> int:
        return len(self.names)


MAX_ADDITIVE_SCALE = 1e3


def group_codes(values: Any, attribute: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Sorted group names and int codes for ``values`` (NaN/empty → its own group, named as evaluation names it: ``unknown``)."""
    text = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values], dtype=object)
    text[text == ""] = MISSING_GROUP
    names = tuple(sorted(set(text.tolist())))
    index = {n: i for i, n in enumerate(names)}
    return names, np.array([index[t] for t in text], dtype=np.int64)


class Modulator:
    """Base class: no-op hooks; subclasses override what they change."""

    Params: ClassVar[type[ModulatorParams]] = ModulatorParams
    #: ``mmfair study``: Params field → ``("log"|"float"|"int", low, high)`` or ``("choice", [values])``, tuned
    #: beside the base method's space when a preset names this modulator (empty: nothing of its own to tune)
    search_space: ClassVar[dict[str, tuple]] = {}
    needs_groups: ClassVar[bool] = False
    #: True when the modulator scales encoder updates by a factor (obeys ``TrainConfig.modulate_via``)
    scales_gradients: ClassVar[bool] = False
    name: ClassVar[str] = ""

    def __init__(self, params: ModulatorParams) -> None:
        self.params = params
        self._epoch_log: dict[str, list[float]] = {}
        self._epoch_counts: dict[str, float] = {}
        self.modulate_via = "lr"
        self._lr_factors: dict[str, float] = {}
        self._applied: dict[str, float] = {}

    # ---- hooks ---------------------------------------------------------------------------------
    def setup(self, model: Any, task: Any, train: Any, config: Any, groups: Groups | None, device: torch.device) -> None:
        if self.needs_groups and groups is None:
            raise ConfigError(f"modulator '{self.name}' needs the sensitive groups of the training stays (fair_attr)")
        self.modulate_via = getattr(config, "modulate_via", "lr")

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def batch_order(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """The epoch's order of the training rows ``rows`` (CPU, long); None = the trainer's random permutation."""
        return None

    def lr_factors(self) -> dict[str, float]:
        """Learning-rate factors per optimizer parameter group (``encoder:<m>``) for the step about to be
        taken; read once per step by the trainer (``modulate_via=lr``), then cleared."""
        out, self._lr_factors = self._lr_factors, {}
        return out

    def loss(self, model: Any, output: Any, batch: dict[str, Any], task: Any) -> torch.Tensor:
        return model.training_loss(output, batch, task)

    def after_backward(self, model: Any, output: Any, batch: dict[str, Any]) -> None:
        return None

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        out = {f"modulator_{k}": float(np.mean(v)) for k, v in sorted(self._epoch_log.items()) if v}
        out.update({f"modulator_{k}": float(v) for k, v in sorted(self._epoch_counts.items())})
        self._epoch_log, self._epoch_counts = {}, {}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    # ---- helpers -------------------------------------------------------------------------------
    def log_value(self, key: str, value: float) -> None:
        """Per-step value; history.csv gets its epoch mean as ``modulator_<key>``."""
        self._epoch_log.setdefault(key, []).append(float(value))

    def count_value(self, key: str, value: float = 1.0) -> None:
        """Per-step count; history.csv gets its epoch sum as ``modulator_<key>``."""
        self._epoch_counts[key] = self._epoch_counts.get(key, 0.0) + float(value)

    def scale_encoders(self, encoders: dict[str, list[torch.nn.Parameter]], factors: dict[str, float]) -> None:
        """Apply ``factors`` (per modality) to the encoders' updates of this step, as ``modulate_via`` says:
        ``grad`` multiplies the gradients now, ``lr`` leaves them and sets the step's learning-rate factors."""
        self._applied = dict(factors)
        for m, k in factors.items():
            self.log_value(f"factor[{m}]", k)
        if self.modulate_via == "lr":
            self._lr_factors = {f"encoder:{m}": float(k) for m, k in factors.items() if k != 1.0}
            return
        with torch.no_grad():
            for m, k in factors.items():
                if k == 1.0:
                    continue
                for p in encoders[m]:
                    if p.grad is not None:
                        p.grad.mul_(k)

    def additive_scale(self, modality: str) -> float:
        """Multiplier of a gradient term added after this step's factor: 1 in grad mode, 1/factor in lr mode
        (at most ``MAX_ADDITIVE_SCALE``: a vanishing factor must not overflow the gradient or dominate the
        clipping norm; such a step then carries proportionally less of the added term)."""
        k = self._applied.get(modality, 1.0)
        if self.modulate_via != "lr" or k <= 0:
            return 1.0
        return min(1.0 / k, MAX_ADDITIVE_SCALE)


def resolve_params(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Every hyperparameter of modulator ``name`` with defaults filled in (JSON-ready, for config.json)."""
    cls = MODULATORS.get(name)
    try:
        return cls.Params(**(params or {})).model_dump(mode="json")
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"modulator '{name}': invalid modulator_params ({msg})") from None


def build_modulator(name: str, params: dict[str, Any] | None = None) -> Modulator:
    cls = MODULATORS.get(name)
    return cls(cls.Params(**resolve_params(name, params)))


# ---- shared pieces ----------------------------------------------------------------------------
def encoder_groups(model: Any, modalities: tuple[str, ...] | None = None) -> dict[str, list[torch.nn.Parameter]]:
    """``{modality: parameters of encoder:<modality>}``; a missing or empty group is a ConfigError."""
    groups = model.param_groups()
    out = {}
    for m in modalities or tuple(model.modalities):
        params = groups.get(f"encoder:{m}", [])
        if not params:
            raise ConfigError(f"model {type(model).__name__} has no parameters in group 'encoder:{m}'")
        out[m] = params
    return out


def per_row_loss(task: Any, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task's loss per row, unreduced (``Task.per_row_loss``, class weights included; CE for multiclass,
    mean BCE over labels for a task object without it)."""
    if hasattr(task, "per_row_loss"):
        return task.per_row_loss(logits, labels)
    logits = logits.float()
    if task.kind == "multiclass":
        return F.cross_entropy(logits, labels, reduction="none")
    return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(dim=1)


class RowWeightedTask:
    """A task whose ``loss(logits, labels, mask)`` is ``Σ w_i ℓ_i over the mask / |mask ∩ keep|``.

    ``row_weight`` (float [B], may be None = 1) multiplies each row's loss; ``keep`` (bool [B], may be
    None) restricts the rows further (e.g. one group). Every other attribute is the wrapped task's, so
    ``model.training_loss(output, batch, RowWeightedTask(task, w))`` reweights any method's loss terms
    that go through ``task.loss`` while leaving its auxiliary losses as they are.
    """

    def __init__(self, task: Any, row_weight: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> None:
        self._task = task
        self._weight = row_weight
        self._keep = keep

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        per_row = per_row_loss(self._task, logits, labels)
        keep = torch.ones_like(per_row, dtype=torch.bool) if weight is None else weight.bool()
        if self._keep is not None:
            keep = keep & self._keep
        if self._weight is not None:
            per_row = per_row * self._weight.to(per_row.dtype)
        per_row = torch.where(keep, per_row, torch.zeros((), dtype=per_row.dtype, device=per_row.device))
        return per_row.sum() / keep.sum().clamp_min(1).to(per_row.dtype)


def aux_total(output: Any, like: torch.Tensor) -> torch.Tensor:
    total = like.new_zeros(())
    for aux in output.aux_losses.values():
        total = total + aux
    return total


def label_matrix(task: Any, labels: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """Labels as a float one-vs-rest matrix [B, K] (multiclass → one-hot; binary/multilabel as is)."""
    if task.kind == "multiclass":
        return F.one_hot(labels.long(), n_outputs).float()
    return labels.float().reshape(len(labels), -1)


def score_matrix(task: Any, logits: torch.Tensor) -> torch.Tensor:
    """Scores per one-vs-rest column: log-softmax for multiclass, the logits otherwise (monotone in p)."""
    logits = logits.float()
    return torch.log_softmax(logits, dim=1) if task.kind == "multiclass" else logits


def exact_auc(y: torch.Tensor, s: torch.Tensor) -> float:
    """Macro ROC-AUC over the columns with both classes (Mann-Whitney, ties averaged); NaN if none."""
    from mmfair.core.training.tasks import auroc

    y_np = y.detach().cpu().double().numpy()
    s_np = s.detach().cpu().double().numpy()
    y_np = y_np[:, None] if y_np.ndim == 1 else y_np
    s_np = s_np[:, None] if s_np.ndim == 1 else s_np
    values = [auroc(y_np[:, j], s_np[:, j]) for j in range(y_np.shape[1])]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def surrogate_auc(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor | None:
    """Differentiable pairwise-logistic AUC: ``1 − mean_{pos i, neg j} log(1 + exp(−(s_i − s_j)))``,
    macro over the columns with both classes; None when no column has both (undefined, never 0.5)."""
    y = y[:, None] if y.dim() == 1 else y
    s = s[:, None] if s.dim() == 1 else s
    values = []
    for j in range(y.shape[1]):
        pos, neg = s[y[:, j] > 0.5, j], s[y[:, j] <= 0.5, j]
        if len(pos) == 0 or len(neg) == 0:
            continue
        values.append(1.0 - F.softplus(-(pos[:, None] - neg[None, :])).mean())
    if not values:
        return None
    return torch.stack(values).mean()


def multimodal_modalities(model: Any, config: Any, name: str) -> tuple[str, ...]:
    """The model's modalities, refusing a model with fewer than two (nothing to balance)."""
    modalities = tuple(model.modalities)
    if len(modalities) < 2:
        raise ConfigError(
            f"modulator '{name}' needs a model with at least two modalities ({config.fusion} has {len(modalities)})"
        )
    return modalities
