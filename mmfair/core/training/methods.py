"""A method resolved once: :func:`resolve_method` turns the method a config names into a frozen
:class:`MethodSpec` (its registry entry, modulator, validated hyperparameters, optimizer fields, kind and
report label), and everything downstream (run ids, model and estimator building, the trainer's modulator,
config.json) reads that object instead of asking the registries for the name again.

A preset (``--fusion multifair``, :mod:`mmfair.core.modulators.presets`) is a spec of its own name whose
``fusion`` is its base method and whose modulator is filled in; ``--fusion early --modulator multifair``
resolves to the same parts and the same label.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Literal, Mapping

from pydantic import BaseModel, ValidationError

from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.modulators.presets import PRESETS, check_modulate_via, preset_label, preset_parts
from mmfair.core.registry import FUSIONS, MODULATORS, Entry

#: The TrainConfig fields a method's resolution reads: configs equal on them share one :class:`MethodSpec`.
METHOD_FIELDS = ("fusion", "modulator", "modulator_params", "fusion_params", "hidden_dim", "optimizer", "momentum",
                 "modulate_via", "fair_attr", "cxr_input", "missing_token", "label")


@dataclass(frozen=True)
class MethodSpec:
    """One method, resolved: what builds the model, what modulates its training, and how results name it."""

    name: str  # as asked: a preset's own name or a registered method's
    fusion: str  # the registered method that builds the model (a preset's base); config.json ``fusion``
    entry: Entry = field(repr=False, compare=False)  # the registry entry of ``fusion``
    params: BaseModel | None  # the method's validated Params (None: it declares none)
    modulator: str | None
    modulator_cls: Any = field(repr=False, compare=False)
    modulator_params: Mapping[str, Any] = field(default_factory=dict)  # every value, defaults filled in (read-only)
    optimizer: str = TrainConfig.model_fields["optimizer"].default
    momentum: float = TrainConfig.model_fields["momentum"].default
    modulate_via: str = TrainConfig.model_fields["modulate_via"].default
    label: str = ""  # config.json ``method``, the results tables' ``method`` column

    @property
    def factory(self) -> Any:
        return self.entry.obj

    @property
    def kind(self) -> Literal["nn", "estimator"]:
        """``nn`` (an nn.Module trained by the trainer) or ``estimator`` (fit/predict_proba on arrays: gbm-*)."""
        return "estimator" if self.entry.extra.get("kind", "nn") == "estimator" else "nn"

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(getattr(self.factory, "modalities", ()))

    @property
    def handles_missing(self) -> bool:
        return bool(getattr(self.factory, "handles_missing", False))

    @property
    def accepts_missing_token(self) -> bool:
        return bool(getattr(self.factory, "accepts_missing_token", False))

    @property
    def needs_groups(self) -> bool:
        return self.modulator_cls is not None and bool(getattr(self.modulator_cls, "needs_groups", False))

    @property
    def fusion_params(self) -> dict[str, Any]:
        """Every hyperparameter of the method, JSON-ready (config.json ``fusion_params``)."""
        return {} if self.params is None else self.params.model_dump(mode="json")

    def apply(self, config: TrainConfig) -> TrainConfig:
        """``config`` as it enters the run id and config.json: the base method, the modulator and every
        hyperparameter of both."""
        return config.model_copy(update={"fusion": self.fusion, "modulator": self.modulator,
                                         "modulator_params": dict(self.modulator_params),
                                         "fusion_params": self.fusion_params})

    def relabel(self, config: TrainConfig) -> "MethodSpec":
        """The same spec labelled for ``config`` (after run resolution changed a tagged field, e.g. images mode
        turned off for a method without a CXR branch)."""
        return dataclasses.replace(self, label=_label(self, config))

    def build_modulator(self) -> Any:
        """A fresh modulator instance (None without one)."""
        if self.modulator_cls is None:
            return None
        return self.modulator_cls(self.modulator_cls.Params(**self.modulator_params))


def resolve_method(config: TrainConfig) -> MethodSpec:
    """The :class:`MethodSpec` of ``config``: one registry lookup per name, every parameter validated (a bad
    value is a one-line :class:`ConfigError` naming the method, before any run folder exists)."""
    entry = FUSIONS.entry(config.fusion)
    preset = PRESETS.get(config.fusion)
    fusion, modulator, mod_params = preset_parts(config, preset)
    base = preset.base_entry if preset is not None else entry
    if modulator is None and mod_params:
        raise ConfigError("modulator_params are set but no modulator is (use --modulator or a preset fusion)")
    modulator_cls = MODULATORS.entry(modulator).obj if modulator is not None else None
    check_modulate_via(config, modulator, modulator_cls)
    mod_params = _modulator_params(modulator, modulator_cls, mod_params) if modulator_cls is not None else {}
    spec = MethodSpec(
        name=config.fusion, fusion=fusion, entry=base, params=_fusion_params(fusion, base.obj, config),
        modulator=modulator, modulator_cls=modulator_cls, modulator_params=MappingProxyType(mod_params),
        optimizer=config.optimizer, momentum=config.momentum, modulate_via=config.modulate_via,
    )
    return spec.relabel(config)


def method_name(config: TrainConfig) -> str:
    """The run's method label (config.json ``method``, the ``method`` column of the results tables; the scheme:
    :func:`_label`). ``config`` may name a preset or leave modulator parameters unset (it is resolved first), so
    a study's method spec and the run it trains get the same label."""
    return resolve_method(config).label


def resolve_methods(configs: Iterable[TrainConfig]) -> list[MethodSpec]:
    """:func:`resolve_method` of each config, each distinct method resolved once (folds, seeds and tasks of one
    method share its spec)."""
    specs: dict[str, MethodSpec] = {}
    out = []
    for config in configs:
        key = json.dumps({k: getattr(config, k, None) for k in METHOD_FIELDS}, sort_keys=True, default=str)
        if key not in specs:
            specs[key] = resolve_method(config)
        out.append(specs[key])
    return out


def _fusion_params(name: str, factory: Any, config: TrainConfig) -> BaseModel | None:
    """The method's Params validated, with the run's ``hidden_dim`` in the validation context (healnet: heads
    must divide it), so a constraint between them fails before a run folder exists."""
    params_cls = getattr(factory, "Params", None)
    if params_cls is None:
        if config.fusion_params:
            raise ConfigError(f"fusion '{name}' takes no fusion_params")
        return None
    try:
        return params_cls.model_validate(dict(config.fusion_params), context={"hidden_dim": config.hidden_dim})
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'fusion_params'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"fusion '{name}': invalid fusion_params ({msg})") from None


def _modulator_params(name: str, cls: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of the modulator with defaults filled in (validated; JSON-ready)."""
    try:
        return cls.Params(**dict(params)).model_dump(mode="json")
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"modulator '{name}': invalid modulator_params ({msg})") from None


# ---- the report label --------------------------------------------------------------------------
def _label(spec: MethodSpec, config: TrainConfig) -> str:
    """The run's method label: one canonical scheme, so that results tables never pool runs that differ in how
    the method was run.

    ``<base>[<tag>,<tag>,...]``, the brackets only when there is a tag. ``<base>`` is the preset whose parts
    these are (``multifair``), else ``fusion+modulator`` (``late+ogm-ge``), else the fusion. Tags, in this
    order: ``images`` (``--cxr-input images``), ``learned-token``; every ``fusion_params`` value off its
    default (``healnet[depth=3]``, sorted by key); the modulator's ``variant`` off its default as the bare
    value (``multifair[official-code]``), then every other ``modulator_params`` value off its default *for
    that variant* (``ogm-ge[alpha=0.5]``, sorted); ``fair_attr=<attr>`` for a group-aware modulator when it
    is not the default attribute (``group-dro[fair_attr=gender]``); ``optimizer=<name>`` (and ``momentum=``
    with SGD) off the default, ``modulate_via=grad`` for a gradient-scaling modulator
    (``late[optimizer=sgd]``, ``ogm-ge[modulate_via=grad,optimizer=sgd]`` — training-option tags sorted).
    Other training conditions (cohort, split, train-time missingness) are tidy columns of their own. A config's
    own ``label`` (``mmfair study``'s tuned final runs) replaces the derived one."""
    if getattr(config, "label", None):
        return str(config.label)
    name = spec.fusion if spec.modulator is None else preset_label(spec.fusion, spec.modulator)
    tags = []
    if config.cxr_input == "images":
        tags.append("images")
    if config.missing_token == "learned":
        tags.append("learned-token")
    if spec.params is not None:
        defaults = type(spec.params)().model_dump(mode="json")
        tags += [f"{k}={_text(v)}" for k, v in sorted(spec.fusion_params.items()) if defaults.get(k, object()) != v]
    tags += _modulator_tags(spec, config) + _training_tags(spec)
    return f"{name}[{','.join(tags)}]" if tags else name


def _text(value: Any) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _modulator_tags(spec: MethodSpec, config: TrainConfig) -> list[str]:
    if spec.modulator is None:
        return []
    name, cls, params = spec.modulator, spec.modulator_cls, spec.modulator_params
    variant = params.get("variant")
    defaults = _modulator_params(name, cls, {"variant": variant} if variant is not None else {})
    tags = []
    if variant is not None and variant != _modulator_params(name, cls, {}).get("variant"):
        tags.append(str(variant))
    tags += [f"{k}={_text(v)}" for k, v in sorted(params.items()) if k != "variant" and defaults.get(k) != v]
    if spec.needs_groups and config.fair_attr != TrainConfig.model_fields["fair_attr"].default:
        tags.append(f"fair_attr={config.fair_attr}")
    return tags


def _training_tags(spec: MethodSpec) -> list[str]:
    fields = TrainConfig.model_fields
    tags = {}
    if spec.optimizer != fields["optimizer"].default:
        tags["optimizer"] = spec.optimizer
    if spec.optimizer == "sgd" and spec.momentum != fields["momentum"].default:
        tags["momentum"] = _text(spec.momentum)
    scales = spec.modulator_cls is not None and bool(getattr(spec.modulator_cls, "scales_gradients", False))
    if spec.modulate_via != fields["modulate_via"].default and scales:
        tags["modulate_via"] = spec.modulate_via
    return [f"{k}={v}" for k, v in sorted(tags.items())]
