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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mmfair.core.errors import ConfigError
from mmfair.core.registry import SCENARIOS


#: The default method to train, and the method every other is compared with unless told otherwise
#: (eval-missing's effective robustness, eval-fair's paired tests, the report's rank tests).
BASELINE_METHOD = "late"
#: The sensitive attributes evaluated when none are named (eval-fair, eval-missing's per-group Shapley values).
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("race_group", "gender", "age_group", "insurance_group")
#: Bootstrap replicates of the clean test metrics `mmfair train` writes.
CLEAN_BOOTSTRAP = 200


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
    chart_volume: Literal["compact", "mimic"] = Field(
        "compact", description="compact: only the rows prep reads; mimic: also MIMIC-IV v2.2's volume of other "
        "itemids (~4,300 chartevents and ~1,600 labevents rows per ICU stay) for prep to filter out")
    # planted effects (on/off); ground_truth/ records the values used
    group_base_rates: bool = True
    group_missingness: bool = True
    spo2_bias: bool = True
    group_label_noise: bool = True
    year_acquisition: bool = True
    age_sex_latents: bool = Field(True, description="age and sex shift the latent means (older: sicker, larger "
                                  "heart; male: larger heart); off: latents independent of every demographic")
    image_demographic_signal: bool = Field(False, description="draw sex, age and race group into the CXR (breast "
                                           "shadows, bone density, soft-tissue density): the probe's planted truth")


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
    cxr_encoder: str = Field("mobilenetv3_small_100", description="timm model name of the CXR encoder, or a "
                             "preset such as xrv-densenet121-res224-chex (needs cxr_weights)")
    cxr_weights: Path | None = None
    cxr_pretraining: str | None = Field(None, description="what a timm cxr_weights file was pretrained on (its "
                                        "card); presets declare their own")
    encoder_image_size: int = Field(128, ge=16, le=1024)
    encoder_max_steps: int = Field(400, gt=0, description="CXR encoder optimizer steps (the default stop: a seed "
                                   "gives the same weights on any machine)")
    encoder_max_epochs: int = Field(100, gt=0)
    encoder_time_budget_s: float | None = Field(None, gt=0, description="optional wall-clock cap on the encoder "
                                                "stage; the results then depend on the machine")
    encoder_threads: int = Field(2, ge=0, description="CPU threads of the CXR encoder: a float sum depends on how "
                                 "it is split across threads, so a fixed count keeps results machine-independent; "
                                 "0 = every core (faster, machine-dependent)")
    skip_encoder: bool = False
    workers: int = Field(0, ge=0, description="image decode workers; 0 = one per core")
    memory_limit: str | None = Field(None, description="DuckDB memory limit, e.g. '8GB'; default a fraction of RAM")
    source_label: str | None = Field(None, description="store 'source' attr, e.g. 'synthetic'; default mimic-iv-<version>")
    icu_death_tolerance_hours: float = Field(6.0, ge=0, description="mortality_icu: deathtime <= outtime + this")
    temporal_train_years: tuple[int, int] = Field((2011, 2013), description="temporal split: first and last "
                                                  "estimated year (inclusive) of the training side")
    temporal_test_years: tuple[int, int] = Field((2014, 2016), description="temporal split: the test side's years")
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

    fusion: str = BASELINE_METHOD
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
    optimizer: Literal["adamw", "adam", "sgd"] = Field("adamw", description="optimizer of the model (the modulators' "
                                                       "own auxiliary heads keep theirs); weight_decay is decoupled "
                                                       "for adamw, an L2 term for adam and sgd")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd momentum (only with optimizer sgd)")
    modulate_via: Literal["lr", "grad"] = Field("lr", description="how a gradient-scaling modulator (ogm-ge, cggm, "
                                                "multifair, inforeg) applies its per-encoder factor: lr scales that "
                                                "encoder's learning rate for the step (survives Adam's normalisation); "
                                                "grad multiplies its gradients (the papers' form; under adam/adamw a "
                                                "constant factor is normalised away)")
    modulator: str | None = Field(None, description="training strategy changing losses/gradients (registry MODULATORS); "
                                  "a preset fusion name (e.g. multifair) fills it in")
    modulator_params: dict[str, Any] = Field(default_factory=dict, description="the modulator's hyperparameters; "
                                             "unset ones take the modulator's defaults (all resolved into config.json)")
    fair_attr: str = Field("race_group", description="sensitive attribute whose groups group-aware modulators use "
                           "in training (never a model input), and whose groups the selection rules compare")
    selection_rules: tuple[str, ...] = Field((), description="extra checkpoint selection rules (overall, worst_group, "
                                             "pareto, dto), each chosen on validation and written as "
                                             "predictions_{val,test}_<rule>.csv; empty: the default files only")
    fusion_params: dict[str, Any] = Field(default_factory=dict, description="the fusion method's own hyperparameters "
                                          "(its Params class); unset ones take their defaults (all resolved into config.json)")
    missing_token: Literal["zero", "learned"] = Field("zero", description="an absent modality's slot: exact zeros or a "
                                                      "learned vector (methods that accept it; MedFuse's learnable token)")
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="train-time random removal of the CXR: each "
                                    "training batch drops a present CXR with this probability (redrawn every batch)")
    train_missing_rate: float | None = Field(None, ge=0.0, le=1.0, description="CareBench's protocol: this share of the "
                                             "training stays with a CXR lose it, fixed for the run (seeded, per label)")
    train_cohort: Literal["full", "matched"] = Field("full", description="train and validate on every stay (natural "
                                                     "missingness) or only on stays with a CXR")
    split: Literal["random", "temporal"] = Field("random", description="random: the fold rule of DESIGN §1; temporal: "
                                                 "prep's temporal_split column (test: stays estimated in 2014-2016, one test set for every fold; "
                                                 "train/validate: 2011-2013)")
    label: str | None = Field(None, min_length=1, description="the run's method label (config.json ``method``, the "
                              "results' ``method`` column) instead of the derived one; `mmfair study` sets it on "
                              "tuned final runs (e.g. healnet[tuned]), whose chosen values differ by fold")
    # machine-specific: excluded from the run id
    device: str = "auto"
    workers: int = 0
    threads: int = Field(1, ge=0, description="CPU threads while training/predicting (0 = torch's default); "
                         "small recurrent models run fastest, and most robustly on a busy machine, on 1")

    compile: bool = Field(False, description="torch.compile the training forward/backward on a CUDA device "
                          "(ignored on CPU, where the small recurrent models gain nothing and compiling costs minutes)")

    MACHINE_FIELDS: ClassVar[frozenset[str]] = frozenset({"device", "workers", "threads", "compile"})
    SELECTION_RULES: ClassVar[tuple[str, ...]] = ("overall", "worst_group", "pareto", "dto")

    @field_validator("selection_rules", mode="before")
    @classmethod
    def _check_selection_rules(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        out: list[str] = []
        for rule in value:
            if rule not in cls.SELECTION_RULES:
                raise ValueError(f"unknown selection rule '{rule}'. Available: {', '.join(cls.SELECTION_RULES)}")
            if rule not in out:
                out.append(rule)
        return tuple(sorted(out, key=cls.SELECTION_RULES.index))

    cxr_input: Literal["embeddings", "images"] = Field("embeddings", description="CXR input: the cached embeddings "
                                                        "(fast) or the uint8 images through the prep encoder's backbone, "
                                                        "fine-tuned end to end with light augmentation")
    cxr_weights: Path | None = Field(None, description="images mode: start the backbone from this local weights file "
                                     "(the prep encoder's timm model) instead of the prep encoder's own weights")
    image_size: int | None = Field(None, ge=16, le=1024, description="images mode: training image side; default the "
                                   "prep encoder's")
    image_augment: bool = Field(True, description="images mode: random affine and brightness/contrast jitter in training")
    class_weights: Literal["none", "balanced"] = Field("none", description="balanced: weight each label's positives "
                                                       "by n_neg/n_pos (each class by n/(K n_c) for LOS), from the "
                                                       "training rows")
    static_fields: tuple[str, ...] = Field((), description="the static modality: admission-time cohort.csv fields from "
                                           "the packaged whitelist (train --static adds its defaults; sensitive ones "
                                           "only when named); empty = off")
    hourly_ehr: bool = Field(True, description="the hourly EHR variables (and their masks) enter the EHR branch; "
                             "false (needs static_fields): the branch carries the static channels only, so "
                             "`--modalities static` / `cxr,static` train without the time series")
    @model_validator(mode="after")
    def _check_momentum(self) -> "TrainConfig":
        if self.optimizer != "sgd" and self.momentum != 0.9:
            raise ValueError(f"momentum applies to optimizer sgd only (optimizer is {self.optimizer})")
        return self

    @model_validator(mode="after")
    def _check_ehr_branch(self) -> "TrainConfig":
        if not self.hourly_ehr and not self.static_fields:
            raise ValueError("hourly_ehr false needs static_fields: without the hourly variables the EHR branch "
                             "carries the static channels only (train --modalities static or cxr,static)")
        return self

    def identity(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        for key in self.MACHINE_FIELDS:
            d.pop(key, None)
        return d


class TrainPlan(_Frozen):
    """``mmfair train``: one :class:`TrainConfig` per method × modality subset × task × fold × seed over shared
    ``options``, and the bootstrap of their clean test metrics (expanded by
    :func:`mmfair.core.training.plan.train_configs`). An empty axis takes ``options``' value (else the
    TrainConfig default)."""

    options: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields shared by every run "
                                    "(a config file's values under the command line's)")
    fusions: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    folds: tuple[int, ...] = ()
    seeds: tuple[int, ...] = ()
    modalities: tuple[str, ...] = Field((), description="modality subsets, each a comma-separated subset of ehr, "
                                        "cxr, static (the incremental-addition protocol); empty: the methods as asked")
    static: bool = Field(False, description="add the static modality's default fields (the packaged whitelist's)")
    static_fields: tuple[str, ...] = Field((), description="static fields named on top of options' and the defaults")
    bootstrap: int = Field(CLEAN_BOOTSTRAP, ge=0, description="bootstrap replicates of the clean test metrics")


class EvalMissingConfig(_Frozen):
    """``eval-missing``: the mechanism and its grid (``mmfair.core.evaluation.scenarios``), draws, bootstrap.

    ``rates`` is the grid of ``mcar`` (default 0.2, 0.5, 1.0; rate 0 is always added). ``group`` and
    ``label`` take per-level profiles instead (``level_rates``; CLI ``--rates WHITE=0.1,BLACK=0.4``,
    repeatable; ``group`` also needs ``by``); ``natural`` takes neither. The EHR perturbations take the
    ``rates`` grid as the share of test stays perturbed: ``ehr_group`` removes the variable ``groups``
    (vitals, labs, neuro, output), ``ehr_last_hours`` the last ``hours`` hours, ``ehr_noise`` adds noise
    of sd ``noise_sd`` × the training IQR to the observed values.
    """

    DEFAULT_RATES: ClassVar[tuple[float, ...]] = (0.2, 0.5, 1.0)
    #: The scenario-specific fields and their flags; a scenario names those it reads (``Scenario.options``).
    SCENARIO_OPTIONS: ClassVar[dict[str, str]] = {
        "rates": "--rate", "level_rates": "--rates LEVEL=RATE,...", "by": "--by", "groups": "--groups",
        "hours": "--hours", "noise_sd": "--noise-sd",
    }  # fmt: skip

    mechanism: str = "mcar"
    rates: tuple[float, ...] | None = None
    by: str | None = Field(None, description="group mechanism: the attribute column, e.g. race_group")
    level_rates: tuple[dict[str, float], ...] = ()
    groups: tuple[str, ...] = Field((), description="ehr_group: EHR variable groups to remove (vitals, labs, neuro, output)")
    hours: int | None = Field(None, gt=0, description="ehr_last_hours: how many final hours of the window to remove")
    noise_sd: float | None = Field(None, gt=0, description="ehr_noise: noise sd in units of each variable's training IQR")
    draws: int = Field(5, gt=0, description="random removal draws per rate; mcar intervals pool their replicates")
    seed: int = 0
    modality: Literal["cxr", "ehr", "static"] = "cxr"
    bootstrap: int = Field(1000, ge=0)
    min_group_size: int = Field(10, ge=1, description="small-cell minimum; gaps leave out groups below it")
    device: str = "auto"
    reference: str = Field(BASELINE_METHOD, description="method whose curve effective robustness is measured against")
    attributes: tuple[str, ...] = Field((), description="per-group AUROC and AUROC-gap rows for these attributes")
    test_cohort: Literal["full", "matched"] = Field("full", description="matched: evaluate only test stays with a CXR")
    shapley_attributes: tuple[str, ...] = Field(
        DEFAULT_ATTRIBUTES,
        description="attributes of the per-group modality Shapley values (from the modality-subset runs)",
    )

    @field_validator("level_rates", mode="before")
    @classmethod
    def _parse_profiles(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, (str, dict)):
            value = [value]
        out = []
        for item in value:
            if isinstance(item, str):
                profile: dict[str, Any] = {}
                for part in filter(None, (s.strip() for s in item.split(","))):
                    level, sep, rate = part.rpartition("=")
                    if not sep or not level.strip():
                        raise ValueError(f"'{item}': give LEVEL=RATE pairs separated by commas, e.g. WHITE=0.1,BLACK=0.4")
                    try:
                        profile[level.strip()] = float(rate)
                    except ValueError:
                        raise ValueError(f"'{item}': rate '{rate}' of '{level.strip()}' is not a number") from None
                if not profile:
                    raise ValueError(f"'{item}': an empty profile")
                item = profile
            elif isinstance(item, dict):  # YAML reads `1: 0.6` with an integer key
                item = {str(k): v for k, v in item.items()}
            out.append(item)
        return tuple(out)

    @field_validator("groups", mode="before")
    @classmethod
    def _parse_groups(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        return tuple(g.strip() for item in value for g in str(item).split(",") if g.strip())

    @model_validator(mode="after")
    def _check(self) -> "EvalMissingConfig":
        bad = [r for r in (self.rates or ()) if not 0.0 <= r <= 1.0]
        bad += [r for p in self.level_rates for r in p.values() if not 0.0 <= r <= 1.0]
        if bad:
            raise ValueError(f"missing rates must lie in [0, 1], got {bad}")
        scenario = SCENARIOS.get(self.mechanism)  # the registry alone knows the mechanisms and their options
        for name, flag in self.SCENARIO_OPTIONS.items():
            if name in getattr(scenario, "options", ()) or getattr(self, name) == type(self).model_fields[name].default:
                continue
            owners = [e.name for e in SCENARIOS.entries() if name in getattr(e.obj, "options", ())]
            raise ValueError(f"{flag} belongs to the {' / '.join(owners)} mechanism{'s' if len(owners) > 1 else ''}, "
                             f"not {self.mechanism}")  # fmt: skip
        scenario.check(self)
        return self

    def group_attributes(self) -> tuple[str, ...]:
        """Attributes of the per-group rows: ``attributes``, or the ``by`` attribute of ``group``."""
        if self.attributes:
            return self.attributes
        return (self.by,) if self.by else ()  # only a mechanism that reads --by accepts it

    def rate_grid(self) -> tuple[float, ...]:
        """The ``mcar`` / EHR-perturbation rates requested (the default grid when none were given); 0 is
        added by the scenario."""
        return self.DEFAULT_RATES if self.rates is None else self.rates


class EvalFairConfig(_Frozen):
    """``eval-fair``: attributes (or intersections ``a*b`` of two), the validation operating point, an
    optional recalibration fitted on validation, the small-cell minimum and the bootstrap."""

    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    threshold_rule: str = "val-youden"
    recalibrate: Literal["none", "platt", "isotonic"] = "none"
    min_group_size: int = Field(10, ge=1, description="small-cell minimum; gaps leave out groups below it")
    bootstrap: int = Field(1000, ge=0)
    seed: int = 0
    test_cohort: Literal["full", "matched"] = Field("full", description="matched: only test stays with a CXR")
    reference: str | None = Field(BASELINE_METHOD, description="method every other is compared with on the same "
                                  "test stays (paired bootstrap CI and permutation test); None (or 'none'): no comparisons")
    permutations: int = Field(1000, ge=0, description="permutations of the paired tests (0: no p-values)")
    adjust: Literal["holm", "bh"] = Field("holm", description="p-value adjustment across a phenotype's labels")
    time_inference: bool = Field(True, description="time each run's test predictions (needs the prepared data)")
    device: str = "auto"
    patient_weighting: bool = Field(False, description="also write clean metrics with every patient counting once "
                                    "(weighting=patient rows in metrics.csv; evaluation.weighting)")
    probe: bool = Field(False, description="demographic-encoding probe of each run's representations (loads the "
                        "model and the prepared data; evaluation.probe)")
    probe_attributes: tuple[str, ...] = ("gender", "race_group", "age_group")
    probe_c_grid: tuple[float, ...] = Field((0.01, 0.1, 1.0), min_length=1, description="inverse L2 strengths of "
                                            "the logistic probe, chosen on validation")

    @field_validator("reference", mode="before")
    @classmethod
    def _no_reference(cls, value: Any) -> Any:
        return None if value in ("", "none") else value

    @model_validator(mode="after")
    def _check(self) -> "EvalFairConfig":
        if not self.attributes:
            raise ValueError("at least one attribute is needed")
        for a in self.attributes:
            parts = a.split("*")
            if len(parts) > 2 or any(not p.strip() or p != p.strip() for p in parts) or len(set(parts)) < len(parts):
                raise ValueError(f"attribute '{a}': give one attribute or an intersection of two distinct ones, "
                                 "e.g. race_group*gender")  # fmt: skip
        from mmfair.core.evaluation.thresholds import parse_rule

        try:
            parse_rule(self.threshold_rule)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


class ReportConfig(_Frozen):
    format: Literal["terminal", "markdown", "csv", "html", "latex"] = "terminal"
    out: Path | None = None
    min_group_size: int = Field(10, ge=1)
    reference: str = Field(BASELINE_METHOD, description="reference method of the rank tests (Wilcoxon–Holm)")
    detail: bool = Field(False, description="terminal: also the per-group and long tables")
    width: int = Field(100, ge=60, description="terminal: columns the compact tables must fit")
    figures: bool = Field(True, description="html/latex: also write reports/figures/*.png and .pdf")


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
