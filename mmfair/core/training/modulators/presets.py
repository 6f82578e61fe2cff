"""Named methods that are a fusion model plus a modulator (DESIGN §5): ``mmfair train --fusion multifair``.

A preset is registered in ``FUSIONS`` (so ``mmfair list fusions`` shows it with its paper, and the CLI
accepts it) as a thin subclass of its base method; :func:`resolve_modulator` rewrites a config that names
a preset into its resolved parts — ``fusion`` (the base), ``modulator`` and every ``modulator_params``
value — which is what enters the run id and config.json. ``--fusion multifair`` and
``--fusion early --modulator multifair`` are therefore the same run; config.json's ``method`` reads
``multifair`` for both (:func:`method_name`), and ``<fusion>+<modulator>`` for other compositions.

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
from mmfair.core.training.modulators._base import resolve_params


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
        return config.model_copy(update={"fusion": fusion})
    params = resolve_params(modulator, params)
    return config.model_copy(update={"fusion": fusion, "modulator": modulator, "modulator_params": params})


def method_name(config: TrainConfig) -> str:
    """The name results tables show: the preset whose parts these are, else ``fusion+modulator``; variants
    of a method's model get a tag, so results tables never pool them with the default: ``[images]``
    (``--cxr-input images``), ``[learned-token]``, and every ``fusion_params`` value off its default
    (``healnet[depth=3]``). Training conditions (cohort, split, train-time missingness) are tidy columns."""
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
        tags += [f"{k}={v}" for k, v in sorted(config.fusion_params.items()) if defaults.get(k, object()) != v]
    return f"{name}[{','.join(tags)}]" if tags else name
