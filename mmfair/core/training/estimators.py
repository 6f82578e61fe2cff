"""Run folders of estimator methods (registry entries with ``kind="estimator"``, e.g. the ``gbm-*`` trees of
:mod:`mmfair.core.fusion._gbm`): the counterpart of :mod:`.runs` for models that are not nn.Modules.

An estimator sees a fold as arrays (:class:`~mmfair.core.fusion._gbm.FoldArrays`: RAW hourly values with NaN,
cached CXR embeddings, presence flags, labels), not the scaled tensors of the neural methods. Its run folder
has the same files (DESIGN §3.3): ``model.pt`` holds the fitted state (``torch.save`` of plain strings and
lists: the boosters' text), ``scaling.json`` the training fold's EHR median/IQR (only for
:func:`~.runs.ehr_features`, which EHR perturbation scenarios read), ``history.csv`` one row per booster
(best iteration, validation score, seconds). :func:`.runs.train_run`, :func:`.runs.load_run` and
:func:`.runs.predict` dispatch here, so every evaluation (eval-missing's scenarios with modalities removed or
the EHR perturbed, eval-fair, the cost rows) works unchanged.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

import mmfair
from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.io import atomic_path, write_csv_atomic, write_json_atomic, write_text_atomic
from mmfair.core.protocol import PROTOCOL_VERSION
from mmfair.core.provenance import collect
from mmfair.core.registry import TASKS
from mmfair.core.training.run_files import (
    LoadedRun,
    RunResult,
    ehr_features,
    predictions_csv_text,
    read_predictions_text,
    run_modalities,
    validation_thresholds,
)
from mmfair.core.training.data import ATTRIBUTE_COLUMNS, FoldScaler, StoreData, run_rows
from mmfair.core.training.methods import MethodSpec
from mmfair.core.training.tasks import Task

log = logging.getLogger(__name__)


def check_estimator_config(config: TrainConfig) -> None:
    """Refuse the options that belong to the neural training loop (one line, naming the option)."""
    refused = {
        "--modulator": config.modulator is not None, "--selection": bool(config.selection_rules),
        "--static / --modalities without ehr": bool(config.static_fields) or not config.hourly_ehr,
        "--cxr-input images": config.cxr_input == "images", "--class-weights": config.class_weights != "none",
        "--modality-dropout": config.modality_dropout > 0, "--train-missing-rate": bool(config.train_missing_rate),
        "--missing-token learned": config.missing_token == "learned",
    }  # fmt: skip
    bad = [k for k, v in refused.items() if v]
    if bad:
        raise ConfigError(f"fusion '{config.fusion}' is a tree estimator; it does not take {', '.join(bad)} "
                          "(they belong to the neural training loop)")  # fmt: skip


def _spec(config: TrainConfig, task: Task, store: StoreData):
    from mmfair.core.fusion._gbm import EstimatorSpec

    return EstimatorSpec(n_outputs=task.n_outputs(list(store.cohort.columns)),
                         output_kind=task.output_kind, feature_names=tuple(store.feature_names),
                         cxr_dim=store.cxr_dim, seed=config.seed)  # fmt: skip


def _labels(task: Task, store: StoreData) -> np.ndarray:
    y = task.label_tensor(store.cohort).numpy()
    return y.astype(np.int64) if task.kind == "multiclass" else y.reshape(len(y), -1)


def fold_arrays(store: StoreData, rows: np.ndarray, labels: np.ndarray, values: np.ndarray | None = None,
                present: Mapping[str, np.ndarray] | None = None):  # fmt: skip
    """The arrays of ``rows``; ``values`` replaces the raw hourly values (an EHR perturbation), ``present`` the
    presence flags (already AND-ed with natural presence)."""
    from mmfair.core.fusion._gbm import FoldArrays

    cxr_row = store.cxr_row[rows]
    cxr = None
    if store.cxr_embeddings is not None:
        cxr = np.full((len(rows), store.cxr_dim), np.nan, dtype=np.float32)
        cxr[cxr_row >= 0] = store.cxr_embeddings[cxr_row[cxr_row >= 0]]
    present = dict(present or {"ehr": np.ones(len(rows), dtype=bool), "cxr": cxr_row >= 0})
    return FoldArrays(ehr=store.values[rows] if values is None else values, cxr=cxr, present_ehr=present["ehr"],
                      present_cxr=present["cxr"], labels=labels[rows])  # fmt: skip


def build_estimator(method: MethodSpec, config: TrainConfig, task: Task, store: StoreData, state: dict | None = None):
    """The method's estimator for ``config``'s task and store: unfitted, or fitted from a saved ``state``."""
    spec, factory = _spec(config, task, store), method.factory
    return factory(spec, method.params) if state is None else factory.from_state(spec, method.params, state)


# ---- predictions --------------------------------------------------------------------------------
def _presence(run: Any, rows: np.ndarray, override: Mapping[str, np.ndarray] | None, split: str) -> dict[str, np.ndarray]:
    present = {"ehr": np.ones(len(rows), dtype=bool), "cxr": run.store.cxr_row[rows] >= 0}
    for modality, keep in (override or {}).items():
        keep = np.asarray(keep, dtype=bool)
        if modality not in present:
            if modality == "static" and keep.all():
                continue
            raise ConfigError(f"predict: unknown modality '{modality}' (have {', '.join(present)})")
        if keep.shape != present[modality].shape:
            raise ConfigError(f"predict: present_override['{modality}'] has {keep.size} values, split '{split}' has "
                              f"{len(rows)} stays")  # fmt: skip
        present[modality] = present[modality] & keep
    return present


def predict_estimator(run: Any, split: str, present_override: Mapping[str, np.ndarray] | None = None,
                      ehr_transform: Any = None) -> pd.DataFrame:  # fmt: skip
    """:func:`.runs.predict` for an estimator run (same arguments, same frame)."""
    if split not in ("val", "test"):
        raise ConfigError(f"predict: split must be 'val' or 'test', got '{split}'")
    cfg, store = run.config, run.store
    rows = run_rows(store, cfg.fold, cfg.split, cfg.train_cohort)[split]
    present = _presence(run, rows, present_override, split)
    values = None
    if ehr_transform is not None:
        raw = store.values[rows].copy()
        values = np.asarray(ehr_transform(raw, ehr_features(run)), dtype=np.float32)
        if values.shape != raw.shape:
            raise ConfigError(f"predict: ehr_transform returned shape {values.shape}, expected {raw.shape}")
    labels = _labels(run.task, store)
    probs = run.model.predict_proba(fold_arrays(store, rows, labels, values, present))
    cohort = store.cohort.iloc[rows].reset_index(drop=True)
    y = labels[rows].reshape(len(rows), -1)
    scores = run.task.prediction_frame(y, probs, list(store.cohort.columns))
    frame = pd.concat([cohort[["stay_id", "fold"]], scores, cohort[["subject_id", *ATTRIBUTE_COLUMNS]]], axis=1)
    frame["present_ehr"] = present["ehr"].astype(np.int64)
    frame["present_cxr"] = present["cxr"].astype(np.int64)
    return read_predictions_text(predictions_csv_text(frame))


# ---- training and loading -----------------------------------------------------------------------
def train_estimator_run(method: MethodSpec, config: TrainConfig, store: StoreData, run_id: str, run_dir: Path,
                        inputs: Mapping[str, str] | None = None, ws: Any = None):  # fmt: skip
    """Train an estimator run into ``run_dir`` (the checks and run id are :func:`.runs.train_run`'s)."""
    check_estimator_config(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    task: Task = TASKS.get(config.task)
    rows = run_rows(store, config.fold, config.split, config.train_cohort)
    scaler = FoldScaler(store.feature_names).fit(store, rows["train"])
    labels = _labels(task, store)
    model = build_estimator(method, config, task, store)
    log.info("run %s: %s (trees) on %s, fold %d, seed %d", run_id, config.fusion, config.task, config.fold, config.seed)
    start = time.perf_counter()
    history = model.fit(fold_arrays(store, rows["train"], labels), fold_arrays(store, rows["val"], labels))
    seconds = time.perf_counter() - start
    run = LoadedRun(run_dir, config, {"run_id": run_id}, task, model, scaler, store, torch.device("cpu"), method)
    frames = {name: predict_estimator(run, name) for name in ("val", "test")}

    write_json_atomic(run_dir / "scaling.json", scaler.to_dict())
    with atomic_path(run_dir / "model.pt") as tmp:
        torch.save({"estimator": config.fusion, "state": model.state()}, tmp)
    write_csv_atomic(run_dir / "history.csv", history)
    for name, frame in frames.items():
        write_text_atomic(run_dir / f"predictions_{name}.csv", predictions_csv_text(frame))
    write_json_atomic(run_dir / "threshold.json", validation_thresholds(task, frames["val"], list(store.cohort.columns)))
    has_cxr = store.cxr_row[rows["train"]] >= 0
    info = {
        **config.model_dump(mode="json"), "run_id": run_id, "method": method.label,
        "modalities": run_modalities(config, method), "handles_missing": True, "kind": "estimator",
        "store_fingerprint": store.fingerprint, "inputs": dict(inputs or {}), "protocol": PROTOCOL_VERSION,
        "mmfair_version": mmfair.__version__, "train_cxr_missing_share": float(1.0 - has_cxr.mean()),
        "n_params": model.size(), "best_epoch": None, "train_seconds": seconds, "peak_memory_mb": None,
        "n_train": int(len(rows["train"])), "class_weight_values": None,
        "provenance": collect(ws, store.fingerprint, "cpu", _library_version()),
    }  # fmt: skip
    write_json_atomic(run_dir / "config.json", info)
    write_text_atomic(run_dir / "DONE", "")
    log.info("run %s done: %d boosters, %.1fs", run_id, len(history), seconds)
    return RunResult(run_id=run_id, run_dir=run_dir, skipped=False, best_epoch=None, train_seconds=seconds)


def _library_version() -> str:
    import lightgbm

    return f"lightgbm {lightgbm.__version__}"


def load_estimator(run_dir: Path, method: MethodSpec, config: TrainConfig, task: Task, store: StoreData):
    """The fitted estimator of a finished run folder."""
    from mmfair.core.errors import InputFileError

    saved = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("estimator") != config.fusion:
        raise InputFileError(f"{run_dir / 'model.pt'}: not this run's fitted '{config.fusion}' state; retrain the run")
    return build_estimator(method, config, task, store, saved["state"])
