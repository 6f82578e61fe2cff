"""Named methods that are a fusion model plus a modulator (DESIGN §5): ``mmfair train --fusion multifair``.

A preset is registered in ``FUSIONS`` (so ``mmfair list fusions`` shows it with its paper, and the CLI
accepts it) as a thin subclass of its base method; :func:`resolve_modulator` rewrites a config that names
a preset into its resolved parts — ``fusion`` (the base), ``modulator`` and every ``modulator_params``
value — which is what enters the run id and config.json. ``--fusion multifair`` and
``--fusion early --modulator multifair`` are therefore the same run; config.json's ``method`` reads
``multifair`` for both (:func:`method_name`, which also tags every non-default parameter, e.g.
``multifair[official-code]``), and ``<fusion>+<modulator>`` for other compositions.

Base methods: the presets build on ``early`` (joint fusion of the modality embeddings with a shared
head), the concatenation fusion OGM-GE was introduced with and the simplest fused model exposing
``encoder:<modality>`` groups and one fused head layer — except ``aug``, whose method needs its own
architecture (``aug-base``: switchable boosting layers on a shared classifier). MultiFair's own architecture fuses modality
tokens with a transformer; compose ``--fusion attention --modulator multifair`` for that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mmfair.core.fusion  # noqa: F401  (registers the base methods)
from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.registry import FUSIONS, MODULATORS
from mmfair.core.modulators._base import resolve_params


@dataclass(frozen=True)
class Preset:
    name: str
    base: str
    modulator: str
    params: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {}


def register_preset(name: str, base: str, modulator: str, params: dict[str, Any] | None = None) -> Preset:
    """Register ``name`` in FUSIONS (summary/paper from the modulator's entry) and in :data:`PRESETS`."""
    preset = Preset(name, base, modulator, dict(params or {}))
    mod_entry = MODULATORS.entry(modulator)
    base_cls = FUSIONS.get(base)
    cls = type(
        f"{base_cls.__name__}Preset_{name.replace('-', '_')}",
        (base_cls,),
        {"__module__": mod_entry.obj.__module__, "preset": preset,
         "__doc__": f"Preset '{name}': '{base}' trained with the '{modulator}' modulator (resolved into config.json)."},
    )
    FUSIONS.register(name, summary=f"preset: {base} + modulator {modulator} — {mod_entry.summary}", paper=mod_entry.paper)(cls)
    PRESETS[name] = preset
    return preset


def resolve_modulator(config: TrainConfig) -> TrainConfig:
    """Expand a preset fusion name and fill every modulator hyperparameter (validated)."""
    fusion, modulator, params = config.fusion, config.modulator, dict(config.modulator_params)
    if fusion in PRESETS:
        preset = PRESETS[fusion]
        if modulator not in (None, preset.modulator):
            raise ConfigError(f"fusion '{fusion}' is a preset with modulator '{preset.modulator}'; it cannot take modulator '{modulator}'")
        fusion, modulator, params = preset.base, preset.modulator, {**preset.params, **params}
    if modulator is None:
        if params:
            raise ConfigError("modulator_params are set but no modulator is (use --modulator or a preset fusion)")
        _check_modulate_via(config, None)
        return config.model_copy(update={"fusion": fusion})
    _check_modulate_via(config, modulator)
    params = resolve_params(modulator, params)
    return config.model_copy(update={"fusion": fusion, "modulator": modulator, "modulator_params": params})


def _check_modulate_via(config: TrainConfig, modulator: str | None) -> None:
    """``modulate_via`` off its default only where it changes something: a gradient-scaling modulator."""
    if config.modulate_via == TrainConfig.model_fields["modulate_via"].default:
        return
    if modulator is None or not getattr(MODULATORS.get(modulator), "scales_gradients", False):
        scaling = sorted(n for n in MODULATORS.names() if getattr(MODULATORS.get(n), "scales_gradients", False))
        raise ConfigError(f"modulate_via '{config.modulate_via}' applies to gradient-scaling modulators only "
                          f"({', '.join(scaling)}); {'no modulator is set' if modulator is None else f'{modulator} scales none'}")


def method_name(config: TrainConfig) -> str:
    """The run's method label (config.json ``method``, the ``method`` column of the results tables): one
    canonical scheme, so that results tables never pool runs that differ in how the method was run.

    ``<base>[<tag>,<tag>,...]``, the brackets only when there is a tag. ``<base>`` is the preset whose parts
    these are (``multifair``), else ``fusion+modulator`` (``late+ogm-ge``), else the fusion. Tags, in this
    order: ``images`` (``--cxr-input images``), ``learned-token``; every ``fusion_params`` value off its
    default (``healnet[depth=3]``, sorted by key); the modulator's ``variant`` off its default as the bare
    value (``multifair[official-code]``), then every other ``modulator_params`` value off its default *for
    that variant* (``ogm-ge[alpha=0.5]``, sorted); ``fair_attr=<attr>`` for a group-aware modulator when it
    is not the default attribute (``group-dro[fair_attr=gender]``); ``optimizer=<name>`` (and ``momentum=``
    with SGD) off the default, ``modulate_via=grad`` for a gradient-scaling modulator
    (``late[optimizer=sgd]``, ``ogm-ge[modulate_via=grad,optimizer=sgd]`` — training-option tags sorted).
    Other training conditions (cohort, split, train-time missingness) are tidy columns of their own.
    ``config`` may name a preset or leave modulator parameters unset (it is resolved first), so a study's
    method spec and the run it trains get the same label."""
    config = resolve_modulator(config)
    name = f"{config.fusion}+{config.modulator}" if config.modulator is not None else config.fusion
    if config.modulator is not None:
        for preset in PRESETS.values():
            if preset.base == config.fusion and preset.modulator == config.modulator:
                name = preset.name
                break
    tags = []
    if config.cxr_input == "images":
        tags.append("images")
    if config.missing_token == "learned":
        tags.append("learned-token")
    params_cls = getattr(FUSIONS.get(config.fusion), "Params", None)
    if params_cls is not None and config.fusion_params:
        defaults = params_cls().model_dump(mode="json")
        tags += [f"{k}={_text(v)}" for k, v in sorted(config.fusion_params.items()) if defaults.get(k, object()) != v]
    tags += _modulator_tags(config) + _training_tags(config)
    return f"{name}[{','.join(tags)}]" if tags else name


def _text(value: Any) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _modulator_tags(config: TrainConfig) -> list[str]:
    if config.modulator is None:
        return []
    params = resolve_params(config.modulator, config.modulator_params)
    variant = params.get("variant")
    defaults = resolve_params(config.modulator, {"variant": variant} if variant is not None else {})
    tags = []
    if variant is not None and variant != resolve_params(config.modulator, {}).get("variant"):
        tags.append(str(variant))
    tags += [f"{k}={_text(v)}" for k, v in sorted(params.items()) if k != "variant" and defaults.get(k) != v]
    if MODULATORS.get(config.modulator).needs_groups and config.fair_attr != TrainConfig.model_fields["fair_attr"].default:
        tags.append(f"fair_attr={config.fair_attr}")
    return tags


def _training_tags(config: TrainConfig) -> list[str]:
    fields = TrainConfig.model_fields
    tags = {}
    if config.optimizer != fields["optimizer"].default:
        tags["optimizer"] = config.optimizer
    if config.optimizer == "sgd" and config.momentum != fields["momentum"].default:
        tags["momentum"] = _text(config.momentum)
    if config.modulate_via != fields["modulate_via"].default and _scales_gradients(config):
        tags["modulate_via"] = config.modulate_via
    return [f"{k}={v}" for k, v in sorted(tags.items())]


def _scales_gradients(config: TrainConfig) -> bool:
    return config.modulator is not None and bool(getattr(MODULATORS.get(config.modulator), "scales_gradients", False))
