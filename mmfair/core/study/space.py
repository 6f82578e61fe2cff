"""Search spaces. Each method declares its own next to its ``Params`` (``search_space`` on the registered class:
Params field → ``("log"|"float"|"int", low, high)`` or ``("choice", [values])``); the shared hyperparameters
every method has (learning rate, width, dropout, weight decay) are declared here once.

A modulator declares its space next to its ``Params`` too (``search_space`` on the registered Modulator); a preset
(``multifair`` = ``early`` + the ``multifair`` modulator) tunes its base architecture's space and its modulator's.

Optuna parameter names: the generic ones as they are (``lr``), a method's own as ``fusion.<field>``, its
modulator's as ``modulator.<field>``. A value fixed in the study (``train`` block, a method's ``params`` or
``modulator_params``, a preset's own parameters) is left out of the space.
"""

from __future__ import annotations

from typing import Any

from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError

GENERIC_SPACE: dict[str, tuple] = {
    "lr": ("log", 1e-4, 1e-2),
    "hidden_dim": ("choice", [32, 64, 128]),
    "dropout": ("float", 0.0, 0.5),
    "weight_decay": ("log", 1e-6, 1e-2),
}
FUSION_PREFIX = "fusion."
MODULATOR_PREFIX = "modulator."


def method_space(fusion: str) -> dict[str, tuple]:
    """The method's own space (a modulator preset inherits its base architecture's)."""
    from mmfair.core.registry import FUSIONS

    factory = FUSIONS.get(fusion)
    space = dict(getattr(factory, "search_space", None) or {})
    fields = getattr(getattr(factory, "Params", None), "model_fields", {})
    unknown = sorted(set(space) - set(fields))
    if unknown:
        raise ConfigError(f"fusion '{fusion}': search_space names {', '.join(unknown)}, not fields of its Params")
    return space


def modulator_of(fusion: str, modulator: str | None = None) -> tuple[str | None, dict[str, Any]]:
    """The modulator a method trains with (a preset's, else ``modulator``) and the parameters the preset fixes."""
    from mmfair.core.modulators import PRESETS

    preset = PRESETS.get(fusion)
    return (preset.modulator, dict(preset.params)) if preset is not None else (modulator, {})


def modulator_space(modulator: str) -> dict[str, tuple]:
    """The modulator's own space (declared next to its Params)."""
    from mmfair.core.registry import MODULATORS

    cls = MODULATORS.get(modulator)
    space = dict(getattr(cls, "search_space", None) or {})
    unknown = sorted(set(space) - set(cls.Params.model_fields))
    if unknown:
        raise ConfigError(f"modulator '{modulator}': search_space names {', '.join(unknown)}, not fields of its Params")
    return space


def study_space(fusion: str, generic: tuple[str, ...], fixed_train: dict[str, Any], fixed_params: dict[str, Any],
                fixed_modulator_params: dict[str, Any] | None = None) -> dict[str, tuple]:
    """Optuna name → dimension for one method, without what the study fixes. A method whose class sets
    ``tunes_generic = False`` (one without lr / hidden_dim / dropout, e.g. a tree booster) gets its own space only;
    a preset (or a ``train`` block naming a modulator) adds its modulator's."""
    from mmfair.core.registry import FUSIONS

    shared = getattr(FUSIONS.get(fusion), "tunes_generic", True)
    space = {name: GENERIC_SPACE[name] for name in generic if shared and name not in fixed_train}
    space.update({FUSION_PREFIX + k: dim for k, dim in method_space(fusion).items() if k not in fixed_params})
    modulator, preset_params = modulator_of(fusion, fixed_train.get("modulator"))
    if modulator is not None:
        fixed = {**preset_params, **(fixed_modulator_params or {})}
        space.update({MODULATOR_PREFIX + k: dim for k, dim in modulator_space(modulator).items() if k not in fixed})
    return space


def check_dim(name: str, dim: tuple) -> None:
    kind = dim[0] if dim else None
    ok = (kind in ("log", "float", "int") and len(dim) == 3 and dim[1] <= dim[2]) or (
        kind == "choice" and len(dim) == 2 and len(dim[1]) > 0)
    if not ok or (kind == "log" and dim[1] <= 0):
        raise ConfigError(f"search space '{name}': {dim!r} is not (log|float|int, low, high) or (choice, [values])")


def suggest(trial: Any, space: dict[str, tuple]) -> dict[str, Any]:
    """Draw every dimension of ``space`` from an Optuna trial (fixed params of an enqueued trial come back as given)."""
    values: dict[str, Any] = {}
    for name, dim in space.items():
        check_dim(name, dim)
        kind = dim[0]
        if kind == "choice":
            values[name] = trial.suggest_categorical(name, list(dim[1]))
        elif kind == "int":
            values[name] = trial.suggest_int(name, int(dim[1]), int(dim[2]))
        else:
            values[name] = trial.suggest_float(name, float(dim[1]), float(dim[2]), log=kind == "log")
    return values


def defaults(base: TrainConfig, space: dict[str, tuple]) -> dict[str, Any]:
    """The base configuration's value of every dimension (trial 0: the method at its defaults)."""
    from mmfair.core.registry import FUSIONS

    params_cls = getattr(FUSIONS.get(base.fusion), "Params", None)
    params = params_cls(**base.fusion_params).model_dump() if params_cls is not None else {}
    modulator_params = _resolved_modulator_params(base) if any(n.startswith(MODULATOR_PREFIX) for n in space) else {}
    out = {}
    for name in space:
        if name.startswith(FUSION_PREFIX):
            out[name] = params[name.removeprefix(FUSION_PREFIX)]
        elif name.startswith(MODULATOR_PREFIX):
            out[name] = modulator_params[name.removeprefix(MODULATOR_PREFIX)]
        else:
            out[name] = getattr(base, name)
    return out


def _resolved_modulator_params(base: TrainConfig) -> dict[str, Any]:
    from mmfair.core.modulators import resolve_modulator

    return dict(resolve_modulator(base).modulator_params)


def apply(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``base`` with a trial's values (generic ones as TrainConfig fields, the method's into fusion_params, its
    modulator's into modulator_params)."""
    fusion_params, modulator_params = dict(base.fusion_params), dict(base.modulator_params)
    update: dict[str, Any] = {}
    for name, value in values.items():
        if name.startswith(FUSION_PREFIX):
            fusion_params[name.removeprefix(FUSION_PREFIX)] = value
        elif name.startswith(MODULATOR_PREFIX):
            modulator_params[name.removeprefix(MODULATOR_PREFIX)] = value
        else:
            update[name] = value
    return TrainConfig.model_validate({**base.model_dump(), **update, "fusion_params": fusion_params,
                                       "modulator_params": modulator_params})
