"""Named methods that are a fusion model plus a modulator (DESIGN §5): ``mmfair train --fusion multifair``.

A preset is registered in ``FUSIONS`` (so ``mmfair list fusions`` shows it with its paper, and the CLI
accepts it) as a thin subclass of its base method; :func:`resolve_modulator` rewrites a config that names
a preset into its resolved parts — ``fusion`` (the base), ``modulator`` and every ``modulator_params``
value — which is what enters the run id and config.json. :func:`mmfair.core.training.methods.resolve_method`
turns either spelling into one :class:`~mmfair.core.training.methods.MethodSpec`. ``--fusion multifair`` and
``--fusion early --modulator multifair`` are therefore the same run; config.json's ``method`` reads
``multifair`` for both (:func:`mmfair.core.training.methods.method_name`, which also tags every non-default parameter, e.g.
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
from mmfair.core.registry import FUSIONS, MODULATORS, Entry
from mmfair.core.modulators._base import resolve_params


@dataclass(frozen=True)
class Preset:
    name: str
    base: str
    modulator: str
    params: dict[str, Any] = field(default_factory=dict)
    base_entry: Entry | None = field(default=None, compare=False, repr=False)  # the base's registry entry


PRESETS: dict[str, Preset] = {}
#: ``(base, modulator)`` → the preset whose parts they are (the first registered), for the method label.
_PRESET_OF_PARTS: dict[tuple[str, str], str] = {}


def register_preset(name: str, base: str, modulator: str, params: dict[str, Any] | None = None) -> Preset:
    """Register ``name`` in FUSIONS (summary/paper from the modulator's entry) and in :data:`PRESETS`."""
    mod_entry = MODULATORS.entry(modulator)
    base_entry = FUSIONS.entry(base)
    preset = Preset(name, base, modulator, dict(params or {}), base_entry)
    base_cls = base_entry.obj
    cls = type(
        f"{base_cls.__name__}Preset_{name.replace('-', '_')}",
        (base_cls,),
        {"__module__": mod_entry.obj.__module__, "preset": preset,
         "__doc__": f"Preset '{name}': '{base}' trained with the '{modulator}' modulator (resolved into config.json)."},
    )
    FUSIONS.register(name, summary=f"preset: {base} + modulator {modulator} — {mod_entry.summary}", paper=mod_entry.paper)(cls)
    PRESETS[name] = preset
    _PRESET_OF_PARTS.setdefault((base, modulator), name)
    return preset


def preset_parts(config: TrainConfig, preset: Preset | None) -> tuple[str, str | None, dict[str, Any]]:
    """``(fusion, modulator, modulator_params)`` of ``config``: a preset's base and modulator with the preset's
    parameters under the config's own, else the config's fields as given."""
    fusion, modulator, params = config.fusion, config.modulator, dict(config.modulator_params)
    if preset is None:
        return fusion, modulator, params
    if modulator not in (None, preset.modulator):
        raise ConfigError(f"fusion '{fusion}' is a preset with modulator '{preset.modulator}'; it cannot take modulator '{modulator}'")
    return preset.base, preset.modulator, {**preset.params, **params}


def preset_label(base: str, modulator: str) -> str:
    """The label of ``base`` trained with ``modulator``: the preset of these parts (``multifair``), else
    ``base+modulator``."""
    return _PRESET_OF_PARTS.get((base, modulator), f"{base}+{modulator}")


def resolve_modulator(config: TrainConfig) -> TrainConfig:
    """Expand a preset fusion name and fill every modulator hyperparameter (validated)."""
    fusion, modulator, params = preset_parts(config, PRESETS.get(config.fusion))
    if modulator is None:
        if params:
            raise ConfigError("modulator_params are set but no modulator is (use --modulator or a preset fusion)")
        check_modulate_via(config, None, None)
        return config.model_copy(update={"fusion": fusion})
    check_modulate_via(config, modulator, MODULATORS.get(modulator))
    params = resolve_params(modulator, params)
    return config.model_copy(update={"fusion": fusion, "modulator": modulator, "modulator_params": params})


def check_modulate_via(config: TrainConfig, modulator: str | None, modulator_cls: Any) -> None:
    """``modulate_via`` off its default only where it changes something: a gradient-scaling modulator."""
    if config.modulate_via == TrainConfig.model_fields["modulate_via"].default:
        return
    if modulator_cls is None or not getattr(modulator_cls, "scales_gradients", False):
        scaling = sorted(n for n in MODULATORS.names() if getattr(MODULATORS.get(n), "scales_gradients", False))
        raise ConfigError(f"modulate_via '{config.modulate_via}' applies to gradient-scaling modulators only "
                          f"({', '.join(scaling)}); {'no modulator is set' if modulator is None else f'{modulator} scales none'}")
