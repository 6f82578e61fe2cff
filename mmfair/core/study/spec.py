"""The study file (``mmfair study run STUDY.yaml`` or ``--preset NAME``): a frozen model of the whole grid.

A study names the methods (each with optional fixed hyperparameters), tasks, folds, seeds, modality subsets
(the incremental-addition protocol), train-time missingness, checkpoint selection rules, the tuning budget,
and the eval-missing scenarios and eval-fair settings run after training. Optional ``stores`` names prepared
stores the whole grid is repeated on (see :mod:`mmfair.core.study.stores`). Unknown keys are refused with the
key named (``extra="forbid"`` at every level); a bad file is one ``ConfigError`` line (exit 2).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmfair.core.config import (
    CLEAN_BOOTSTRAP,
    EvalFairConfig,
    EvalMissingConfig,
    PrepConfig,
    TrainConfig,
    load_config_file,
)
from mmfair.core.errors import ConfigError

#: TrainConfig fields the grid itself sets; a study's ``train`` block may not.
GRID_FIELDS = frozenset({"fusion", "task", "fold", "seed", "fusion_params", "modulator_params", "selection_rules",
                         "static_fields", "hourly_ehr", "train_missing_rate", "modality_dropout"})
MODALITY_NAMES = ("ehr", "cxr", "static")
#: PrepConfig fields a store may not override: every store is prepared from the main workspace's source.
SOURCE_FIELDS = frozenset({"mimic_root", "cxr_root"})
#: A store name is a folder name under ``<workspace>/stores/``.
STORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MethodSpec(_Frozen):
    """A method of the grid; ``params``/``modulator_params`` are fixed (resolved like ``--fusion-param``) and
    left out of the search space."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    modulator_params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TrainMissing(_Frozen):
    """One train-time missingness setting: CareBench's fixed removal rate, or per-batch modality dropout."""

    train_missing_rate: float | None = Field(None, ge=0.0, le=1.0)
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @property
    def removes_cxr(self) -> bool:
        return bool(self.train_missing_rate) or self.modality_dropout > 0


class Tuning(_Frozen):
    """Equal-budget tuning: ``trials`` per method × task × fold × setting, on that fold's validation only."""

    trials: int = Field(0, ge=0, description="trials per unit; 0 = no tuning (every method at its defaults)")
    objective: Literal["auprc", "auroc", "auprc-fair"] = Field(
        "auprc", description="validation objective; auprc-fair subtracts fair_weight × the validation AUROC gap "
        "across fair_attr's groups")
    fair_weight: float = Field(1.0, ge=0.0)
    fair_attr: str = "race_group"
    min_group_size: int = Field(10, ge=1, description="auprc-fair: groups smaller than this on validation are left out")
    seed: int = Field(0, description="seed of the TPE sampler")
    startup_trials: int = Field(5, ge=0, description="random trials before TPE models the history")
    generic: tuple[Literal["lr", "hidden_dim", "dropout", "weight_decay"], ...] = Field(
        ("lr", "hidden_dim", "dropout"), description="shared hyperparameters tuned beside each method's own")


class StudySpec(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    methods: tuple[MethodSpec, ...] = Field(min_length=1)
    tasks: tuple[str, ...] = ("mortality",)
    folds: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    modalities: tuple[str, ...] = Field((), description="modality subsets (incremental addition), e.g. ehr, cxr, "
                                        "ehr,cxr; empty = each method with its own modalities")
    train_missing: tuple[TrainMissing, ...] = (TrainMissing(),)
    selection_rules: tuple[str, ...] = ()
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig options shared by every run")
    tuning: Tuning = Tuning()
    bootstrap: int = Field(CLEAN_BOOTSTRAP, ge=0, description="bootstrap replicates of the final runs' clean test metrics")
    eval_missing: tuple[EvalMissingConfig, ...] = ()
    eval_fair: EvalFairConfig | None = None
    stores: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="store name → PrepConfig overrides of the main workspace's prep settings; "
        "the whole grid runs once per store, in <workspace>/stores/<name>/ (empty = the main workspace's store)")

    @field_validator("stores", mode="before")
    @classmethod
    def _check_stores(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic names the type error
        return {name: check_store(name, {} if overrides is None else overrides) for name, overrides in value.items()}

    @field_validator("folds", "seeds", "tasks")
    @classmethod
    def _non_empty(cls, value: tuple) -> tuple:
        if not value:
            raise ValueError("give at least one value")
        return tuple(dict.fromkeys(value))

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            parts = {p.strip() for p in item.split(",") if p.strip()}
            if not parts or parts - set(MODALITY_NAMES):
                raise ValueError(f"'{item}': a non-empty comma-separated subset of {', '.join(MODALITY_NAMES)}")
        return value

    @field_validator("train")
    @classmethod
    def _check_train(cls, value: dict[str, Any]) -> dict[str, Any]:
        grid = sorted(GRID_FIELDS & set(value))
        if grid:
            raise ValueError(f"{', '.join(grid)} is set by the study grid, not by train")
        TrainConfig(**value)  # unknown keys and bad values fail here, named
        return value

    @model_validator(mode="after")
    def _check_names(self) -> "StudySpec":
        TrainConfig(selection_rules=self.selection_rules)
        return self


def check_store(name: Any, overrides: Any) -> dict[str, Any]:
    """One store of the ``stores`` mapping: a safe folder name and valid PrepConfig overrides (a ValueError
    naming the store and the key). A rule across fields (``min_stay_hours`` ≥ ``window_hours``) depends on the
    main workspace's settings too, so it is checked when the store is prepared, not here."""
    if not isinstance(name, str) or not STORE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a store name (letters, digits, '_', '.', '-'; starting with a letter "
                         "or digit)")
    if not isinstance(overrides, dict):
        raise ValueError(f"store '{name}': expected a mapping of prep settings, got {overrides!r}")
    fixed = sorted(SOURCE_FIELDS & set(overrides))
    if fixed:
        raise ValueError(f"store '{name}': {', '.join(fixed)} cannot be overridden (every store is prepared from "
                         "the main workspace's source)")
    try:
        PrepConfig.model_validate(overrides)
    except ValidationError as exc:
        for e in exc.errors():
            key = ".".join(str(x) for x in e.get("loc", ()))
            if e.get("type") == "extra_forbidden":
                raise ValueError(f"store '{name}': unknown prep setting '{key}'") from None
            if key:
                reason = e.get("msg", "invalid").removeprefix("Value error, ")
                raise ValueError(f"store '{name}': {key}: {reason}") from None
    return dict(overrides)


def _error(source: object, exc: ValidationError) -> ConfigError:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if not str(x).startswith("function-")) or "study"
        if e.get("type") == "extra_forbidden":
            parts.append(f"unknown key '{where}'")
        else:
            parts.append(f"{where}: {e.get('msg', 'invalid').removeprefix('Value error, ')}")
    return ConfigError(f"{source}: {'; '.join(parts)}")


def parse_study(data: dict[str, Any], source: object = "study") -> StudySpec:
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise _error(source, exc) from None
    check_registered(spec, source)
    return spec


def check_registered(spec: StudySpec, source: object) -> None:
    """Every method, task and modulator name exists (one line naming the unknown one)."""
    import mmfair.core.fusion  # noqa: F401  (registers the methods)
    import mmfair.core.training  # noqa: F401  (registers tasks and modulators)
    from mmfair.core.registry import FUSIONS, TASKS

    try:
        for m in spec.methods:
            params_cls = getattr(FUSIONS.get(m.name), "Params", None)
            if m.params and params_cls is not None:
                try:
                    params_cls(**m.params)
                except ValidationError as exc:
                    raise _error(f"methods: {m.name}: params", exc) from None
        for t in spec.tasks:
            TASKS.get(t)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def preset_names() -> list[str]:
    folder = resources.files("mmfair.core.study") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    if name not in preset_names():
        raise ConfigError(f"unknown study preset '{name}'. Available: {', '.join(preset_names())}")
    return Path(str(resources.files("mmfair.core.study") / "presets" / f"{name}.yaml"))


def load_study(path: Path | str | None = None, preset: str | None = None) -> StudySpec:
    """A study file or a packaged preset (exactly one of the two)."""
    if (path is None) == (preset is None):
        raise ConfigError("give a study file or --preset NAME (one of the two)")
    file = preset_path(preset) if preset is not None else Path(path)
    return parse_study(load_config_file(file), source=file)


def preset_summaries() -> dict[str, str]:
    """Preset name → its one-line description (for ``mmfair study --help``)."""
    return {name: str(load_config_file(preset_path(name)).get("description", "")).strip().splitlines()[0]
            for name in preset_names()}
