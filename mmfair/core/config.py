"""Frozen pydantic configs: the only place defaults live.

Each command resolves its options into one of these. A YAML/TOML file (``--config``) and CLI overrides
merge into them; the resolved config is written next to every output. Unknown keys are refused
(``extra="forbid"``) so a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmfair.core.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(_Frozen):
    """The embedded synthetic source (DESIGN §4). Every planted effect has a switch."""

    n_stays: int = Field(2000, gt=0, description="cohort stays after the cohort filters")
    seed: int = 0
    mimic_version: Literal["2.2", "3.1"] = "2.2"
    max_image_size: int = Field(512, ge=32, le=4096, description="longest side of the source JPEGs")
    min_image_size: int = Field(320, ge=32, le=4096)
    cxr_availability: float = Field(0.6, ge=0.0, le=1.0, description="share of cohort stays with a paired frontal CXR")
    n_encoder_subjects: int = Field(1200, ge=0, description="non-cohort MIMIC-CXR subjects (encoder training)")
    # planted effects (on/off); ground_truth/ records the values used
    group_base_rates: bool = True
    group_missingness: bool = True
    spo2_bias: bool = True
    group_label_noise: bool = True
    year_acquisition: bool = True


class PrepConfig(_Frozen):
    """How ``prep`` turns a MIMIC-shaped source into ``data/`` (DESIGN §3.1–3.2)."""

    mimic_root: Path | None = None
    cxr_root: Path | None = None
    mimic_version: Literal["auto", "2.2", "3.0", "3.1"] = "auto"
    window_hours: int = Field(48, gt=0)
    min_stay_hours: float = Field(48.0, gt=0)
    min_age: int = Field(18, ge=0)
    n_folds: int = Field(5, ge=2)
    fold_seed: int = 0
    icd10_mode: Literal["extended", "exact"] = "extended"
    variables: str = Field("standard", description="standard | extended | path to a variable-map YAML")
    image_size: int = Field(256, ge=16, le=1024, description="side of the square uint8 images in the store")
    cxr_encoder: str = Field("mobilenetv3_small_100", description="timm model name of the CXR encoder")
    cxr_weights: Path | None = None
    encoder_image_size: int = Field(128, ge=16, le=1024)
    encoder_time_budget_s: float = Field(120.0, gt=0)
    encoder_max_epochs: int = Field(30, gt=0)
    skip_encoder: bool = False
    workers: int = Field(0, ge=0, description="image decode workers; 0 = one per core")
    memory_limit: str | None = Field(None, description="DuckDB memory limit, e.g. '8GB'; default a fraction of RAM")
    source_label: str | None = Field(None, description="store 'source' attr, e.g. 'synthetic'; default mimic-iv-<version>")
    icu_death_tolerance_hours: float = Field(6.0, ge=0, description="mortality_icu: deathtime <= outtime + this")
    temporal_train_groups: tuple[str, ...] = ("2011 - 2013",)
    temporal_test_groups: tuple[str, ...] = ("2014 - 2016",)
    encoder_max_images: int = Field(20000, ge=0, description="cap on non-cohort images decoded for the encoder")
    duckdb_threads: int = Field(0, ge=0, description="DuckDB threads; 0 = one per core")

    @model_validator(mode="after")
    def _stay_covers_window(self) -> "PrepConfig":
        if self.min_stay_hours < self.window_hours:
            raise ValueError(
                f"min_stay_hours={self.min_stay_hours} is shorter than window_hours={self.window_hours}: "
                "trailing empty hours would leak length of stay and death into the features"
            )
        return self


class TrainConfig(_Frozen):
    """One training run (DESIGN §3.3). Fields in ``MACHINE_FIELDS`` do not enter the run id."""

    fusion: str = "late"
    task: str = "mortality"
    fold: int = Field(0, ge=0)
    seed: int = 0
    ehr_encoder: str = "lstm"
    cxr_embedding: str | None = Field(None, description="encoder id under /cxr/embeddings; default the only one")
    hidden_dim: int = Field(64, gt=0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    epochs: int = Field(30, gt=0)
    patience: int = Field(5, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    # machine-specific: excluded from the run id
    device: str = "auto"
    workers: int = 0
    threads: int = Field(1, ge=0, description="CPU threads while training/predicting (0 = torch's default); "
                         "small recurrent models run fastest, and most robustly on a busy machine, on 1")

    MACHINE_FIELDS: ClassVar[frozenset[str]] = frozenset({"device", "workers", "threads"})

    def identity(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        for key in self.MACHINE_FIELDS:
            d.pop(key, None)
        return d


class EvalMissingConfig(_Frozen):
    rates: tuple[float, ...] = (0.2, 0.5, 1.0)
    draws: int = Field(1, gt=0)
    seed: int = 0
    modality: Literal["cxr"] = "cxr"
    bootstrap: int = Field(200, ge=0)
    device: str = "auto"

    @model_validator(mode="after")
    def _rates_in_range(self) -> "EvalMissingConfig":
        bad = [r for r in self.rates if not 0.0 <= r <= 1.0]
        if bad:
            raise ValueError(f"missing rates must lie in [0, 1], got {bad}")
        return self


class EvalFairConfig(_Frozen):
    attributes: tuple[str, ...] = ("race_group", "gender", "age_group", "insurance_group")
    threshold_rule: str = "val-youden"
    min_group_size: int = Field(10, ge=1)
    bootstrap: int = Field(200, ge=0)
    seed: int = 0


class ReportConfig(_Frozen):
    format: Literal["terminal", "markdown", "csv"] = "terminal"
    out: Path | None = None
    min_group_size: int = Field(10, ge=1)


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or TOML config file into a dict (validated later by the model it feeds)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of option names to values")
    return data


def config_hash(payload: dict[str, Any], length: int = 12) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
