"""What a finished run folder holds and how its files are written and read back: the loaded run, the
predictions CSV format, the validation thresholds, the run's modalities and image size. Shared by the network
runs (:mod:`.runs`) and the estimator runs (:mod:`.estimators`), which is why it sits below both."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmfair.core.config import TrainConfig
from mmfair.core.encoders.cxr_images import CXRImageSpec
from mmfair.core.errors import ConfigError
from mmfair.core.evaluation.thresholds import THRESHOLD_RULES, choose_threshold
from mmfair.core.fusion import FusionModel
from mmfair.core.training.data import EHRFeatures, FoldScaler, Split, StoreData, build_splits
from mmfair.core.training.methods import MethodSpec, resolve_method
from mmfair.core.training.tasks import Task

SCORE_FORMAT = "%.9g"  # float32 probabilities survive the round trip exactly
RUN_FILES = ("config.json", "model.pt", "history.csv", "scaling.json", "threshold.json",
             "predictions_val.csv", "predictions_test.csv", "DONE")


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    skipped: bool
    best_epoch: int | None = None
    train_seconds: float | None = None


@dataclass
class LoadedRun:
    """A trained run ready to predict: its config, model (eval mode), task, scaler, store and resolved method."""

    run_dir: Path
    config: TrainConfig
    info: dict[str, Any]
    task: Task
    model: FusionModel
    scaler: FoldScaler
    store: StoreData
    device: torch.device
    method: MethodSpec
    _splits: dict[str, Split] = field(default_factory=dict, repr=False)

    @property
    def run_id(self) -> str:
        return str(self.info["run_id"])

    def split(self, name: str) -> Split:
        if name not in ("val", "test"):
            raise ConfigError(f"predict: split must be 'val' or 'test', got '{name}'")
        if name not in self._splits:
            splits, _ = build_splits(self.store, self.task, self.config.fold, self.device, self.scaler, names=(name,),
                                     split_rule=self.config.split, train_cohort=self.config.train_cohort,
                                     image_size=run_image_size(self.config, self.store))
            self._splits.update(splits)
        return self._splits[name]


def image_spec(config: TrainConfig, store: StoreData) -> CXRImageSpec | None:
    """The image encoder's spec in images mode (model, size and pixel normalisation of the prep encoder)."""
    if config.cxr_input != "images":
        return None
    attrs = store.encoder_attrs
    if store.encoder_id is None or "model" not in attrs:
        raise ConfigError(f"--cxr-input images needs a prep CXR encoder in {store.path} (its timm model and pixel "
                          "normalisation); run `mmfair prep` without --skip-encoder")
    return CXRImageSpec(
        model_name=str(attrs["model"]),
        image_size=int(config.image_size or attrs.get("image_size") or 128),
        norm_mean=float(attrs.get("norm_mean", 0.449)),
        norm_std=float(attrs.get("norm_std", 0.226)),
        augment=config.image_augment,
    )


def run_image_size(config: TrainConfig, store: StoreData) -> int | None:
    spec = image_spec(config, store)
    return None if spec is None else spec.image_size


def run_modalities(config: TrainConfig, method: MethodSpec | None = None) -> list[str]:
    """The modalities a run uses (``config.json`` ``modalities``, the Shapley players): the method's, without
    ``ehr`` when ``hourly_ehr`` is False (its EHR branch then carries only the static channels), plus ``static``
    when ``static_fields`` are set. ``method``: the config's resolved method (else it is resolved)."""
    method = method if method is not None else resolve_method(config)
    methods = [m for m in method.modalities if m != "ehr" or config.hourly_ehr]
    return methods + (["static"] if config.static_fields else [])


def predictions_csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format=SCORE_FORMAT)


def read_predictions_text(text_or_path: str | Path) -> pd.DataFrame:
    """Parse a predictions CSV as the evaluation core does (only an empty field is missing)."""
    source = io.StringIO(text_or_path) if isinstance(text_or_path, str) else text_or_path
    return pd.read_csv(source, keep_default_na=False, na_values=[""], low_memory=False)


def ehr_features(run: LoadedRun) -> EHRFeatures:
    """The feature names, variable groups and training-fold median/IQR an ``ehr_transform`` receives."""
    ehr = run.scaler.ehr
    if ehr is None:
        raise ConfigError(f"{run.run_dir}: this run has no hourly EHR variables (modalities {run.info.get('modalities')})")
    return EHRFeatures(list(run.store.feature_names), list(run.store.feature_groups),
                       np.asarray(ehr.median_, dtype=np.float64).copy(), np.asarray(ehr.iqr_, dtype=np.float64).copy())


def validation_thresholds(task: Task, frame: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, float | None]]:
    if task.kind == "multiclass":
        return {}
    out: dict[str, dict[str, float | None]] = {}
    names = task.label_names(columns)
    for rule in THRESHOLD_RULES:
        out[rule] = {}
        for name in names:
            suffix = "" if task.kind == "binary" else f"_{name}"
            value = choose_threshold(frame[f"label{suffix}"].to_numpy(), frame[f"score{suffix}"].to_numpy(), rule)
            if not np.isnan(value):  # undefined (one class in validation): the label is left out
                out[rule][name] = value
    return out
