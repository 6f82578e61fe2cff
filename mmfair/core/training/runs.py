"""Run folders (DESIGN §3.3): ``train_run`` trains one config into ``runs/<run_id>/``; ``load_run`` and
``predict`` recompute predictions, optionally with modalities removed per stay.

``run_id`` = hash of the resolved config without machine fields plus the store fingerprint. Files:
config.json, model.pt, history.csv, scaling.json, threshold.json, predictions_{val,test}.csv and DONE
(last); with ``selection_rules``, also ``predictions_{val,test}_<rule>.csv`` for each rule other than
``overall`` (the epoch each rule picks on validation, :mod:`.selection`) and ``selection_epochs`` in
config.json. Every file is written atomically; a folder with DONE is skipped; one without resumes from its
``checkpoint.pt`` (written after every epoch) or starts afresh.

Modalities (``config.json`` ``modalities``, :func:`run_modalities`): the method's, ``static`` added with
``static_fields``, and ``ehr`` left out when ``hourly_ehr`` is False — the EHR branch then carries only the
static channels (``--modalities static``: the ``ehr`` method on them; ``cxr,static``: the fusion with them as
its non-image branch). Such a run's predictions say ``present_ehr = 0`` (it has no hourly EHR to remove), its
``scaling.json`` has ``"ehr": null``, and an EHR perturbation leaves its predictions unchanged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch

import mmfair
from mmfair.core.config import TrainConfig, config_hash
from mmfair.core.device import resolve_device
from mmfair.core.errors import ConfigError, InputFileError
from mmfair.core.encoders.cxr import build_cxr_backbone
from mmfair.core.fusion import FusionModel, FusionParams, FusionSpec
from mmfair.core.protocol import PROTOCOL_VERSION
from mmfair.core.provenance import collect as collect_provenance
from mmfair.core.io import atomic_path, file_sha256, write_csv_atomic, write_json_atomic, write_text_atomic
from mmfair.core.registry import EHR_ENCODERS, FUSIONS, MODULATORS, TASKS
from mmfair.core.training.methods import MethodSpec, resolve_method
from mmfair.core.training.run_files import (
    LoadedRun,
    RunResult,
    ehr_features,
    image_spec,
    predictions_csv_text,
    read_predictions_text,
    run_image_size,
    run_modalities,
    validation_thresholds,
)
from mmfair.core.training.data import (
    ATTRIBUTE_COLUMNS,
    MODALITIES,
    EHRFeatures,
    FoldScaler,
    Split,
    StoreData,
    build_split,
    build_splits,
    load_store,
    remove_cxr,
    training_image_size,
)
from mmfair.core.modulators import Groups, group_codes
from mmfair.core.training.selection import choose_epochs
from mmfair.core.training.tasks import Task
from mmfair.core.training.trainer import (
    GROUP_ATTRIBUTES,
    Progress,
    cpu_threads,
    fit,
    predict_logits,
    seed_everything,
)
from mmfair.core.workspace import Workspace

log = logging.getLogger(__name__)

EVAL_BATCH = 256  # images mode: stays per backbone pass when embedding a split for ``prepare``
CHECKPOINT = "checkpoint.pt"  # training state after the last finished epoch; removed before DONE


# ---- store cache: several runs in one process read the same features.h5 once -----------------------
_STORE_CACHE: dict[tuple, StoreData] = {}


def _cached_store(ws: Workspace, cxr_embedding: str | None, images: bool = False) -> StoreData:
    paths = (ws.cohort_csv, ws.features_h5)
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else (str(p),) for p in paths)
    if (stamp, cxr_embedding, images) not in _STORE_CACHE:
        store = load_store(ws, cxr_embedding, images=images)
        if any(key[0] != stamp for key in _STORE_CACHE):
            _STORE_CACHE.clear()  # hold one store at a time
        _STORE_CACHE[(stamp, cxr_embedding, images)] = store
        _STORE_CACHE[(stamp, store.encoder_id, images)] = store  # the resolved id finds the same arrays
    return _STORE_CACHE[(stamp, cxr_embedding, images)]


def init_image_encoder(model: FusionModel, config: TrainConfig, store: StoreData, scaler: FoldScaler) -> None:
    """Images mode: the backbone starts from the prep encoder's saved weights (or ``cxr_weights``), and its
    features are standardised with the training fold's embedding statistics, as the cached embeddings are."""
    encoder = getattr(model, "image_encoder", None)
    if encoder is None:
        return
    backbone = encoder.backbone.model
    if config.cxr_weights is not None:
        loaded = build_cxr_backbone(encoder.spec.model_name, config.cxr_weights, encoder.spec.image_size)
        state = loaded.model.state_dict()
    elif store.encoder_weights is not None:
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in store.encoder_weights.items()}
    else:
        raise ConfigError(
            f"{store.path}: no saved weights for CXR encoder '{store.encoder_id}' (a store written before mmfair "
            "saved them); rerun `mmfair prep` in a new workspace, or pass --cxr-weights FILE"
        )
    try:
        backbone.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"CXR encoder weights do not fit '{encoder.spec.model_name}': {exc}") from None
    if scaler.cxr is not None:
        encoder.set_output_scaling(torch.from_numpy(scaler.cxr.mean_).float(), torch.from_numpy(scaler.cxr.std_).float())


@torch.no_grad()
def embedded_split(model: FusionModel, split: Split, device: torch.device) -> Split:
    """``split`` with its CXR images replaced by the image encoder's (eval-mode) features, for ``prepare``."""
    encoder = getattr(model, "image_encoder", None)
    if encoder is None:
        return split
    was_training = encoder.training
    encoder.eval()
    chunks = [encoder(split.inputs["cxr"][i : i + EVAL_BATCH], split.present["cxr"][i : i + EVAL_BATCH])
              for i in range(0, len(split), EVAL_BATCH)]
    encoder.train(was_training)
    features = torch.cat(chunks) if chunks else torch.zeros(0, encoder.out_dim, device=device)
    return Split(split.name, split.rows, {**split.inputs, "cxr": features}, split.present, split.labels)


# ---- identity ----------------------------------------------------------------------------------
def resolve_run(config: TrainConfig, store: StoreData, method: MethodSpec | None = None) -> tuple[TrainConfig, MethodSpec]:
    """The run's resolved config and method: ``method`` (resolved from ``config`` when not given) written into the
    config (a preset becomes its base method + modulator with every hyperparameter), store-dependent defaults
    filled (the CXR embedding id), and every option checked against the method and the store."""
    method = method if method is not None else resolve_method(config)
    config = _check_inputs(method.apply(config), method, store)
    config = _check_training(config, method, store)
    return config, method.relabel(config)


def resolve_config(config: TrainConfig, store: StoreData) -> TrainConfig:
    """:func:`resolve_run`'s config."""
    return resolve_run(config, store)[0]


def _check_inputs(config: TrainConfig, method: MethodSpec, store: StoreData) -> TrainConfig:
    """The CXR input mode, the static fields and the weights file, against the method's branches and the store."""
    modalities = method.modalities
    if "cxr" in modalities and store.cxr_embeddings is None:
        via = f" (method '{method.fusion}' with modulator '{method.modulator}')" if method.name != method.fusion else ""
        raise ConfigError(f"fusion '{method.name}'{via} needs CXR embeddings, but {store.path} has none under "
                          "/cxr/embeddings (an EHR-only prep, or prep --skip-encoder)")
    if config.cxr_input == "images" and "cxr" not in modalities:  # nothing to fine-tune: the same run
        config = config.model_copy(update={"cxr_input": "embeddings", "cxr_weights": None, "image_size": None,
                                           "image_augment": True})
    if config.cxr_input != "images" and (config.cxr_weights is not None or config.image_size is not None):
        raise ConfigError("cxr_weights and image_size apply to --cxr-input images only")
    if config.cxr_input == "images":  # the store's image side, resolved before the run id so that it records it
        config = config.model_copy(update={"image_size": training_image_size(config.image_size, store)})
    if config.static_fields and "ehr" not in modalities:
        raise ConfigError(f"fusion '{config.fusion}' has no EHR branch, so it cannot read the static fields (they join "
                          "the EHR input); use the ehr method (--modalities static) or a fusion (--modalities cxr,static)")
    if config.static_fields:
        from mmfair.core.training.static import check_static_fields

        config = config.model_copy(update={"static_fields": check_static_fields(config.static_fields)})
        missing = [f for f in config.static_fields if f not in store.cohort.columns]
        if missing:
            raise ConfigError(f"{store.path.parent / 'cohort.csv'}: no column {', '.join(missing)} for the static modality "
                              "(written by an older mmfair; rerun `mmfair prep` in a new workspace)")
    if config.cxr_weights is not None and not Path(config.cxr_weights).is_file():
        raise InputFileError(f"{config.cxr_weights}: CXR weights file not found")
    return config


def _check_training(config: TrainConfig, method: MethodSpec, store: StoreData) -> TrainConfig:
    """The missing-modality options, the training cohort, the group attribute, the task, encoder and fold; the
    default CXR embedding id."""
    if config.missing_token == "learned" and not method.accepts_missing_token:
        takers = sorted(n for n in FUSIONS.names() if getattr(FUSIONS.get(n), "accepts_missing_token", False))
        raise ConfigError(f"fusion '{config.fusion}' has no learned missing token; methods that accept --missing-token "
                          f"learned: {', '.join(takers)}")
    multimodal_cxr = "cxr" in method.modalities and len(method.modalities) > 1
    removes_cxr = config.modality_dropout > 0 or (config.train_missing_rate or 0) > 0
    if removes_cxr and not (multimodal_cxr and method.handles_missing):
        raise ConfigError(f"fusion '{config.fusion}' cannot train with CXRs removed (modality_dropout / "
                          "train_missing_rate need a multimodal method that handles an absent CXR)")
    if "cxr" in method.modalities and not method.handles_missing and config.train_cohort == "full":
        config = config.model_copy(update={"train_cohort": "matched"})  # what it trains on anyway: say so in config.json
    if removes_cxr and config.train_cohort == "matched":
        raise ConfigError("train_cohort 'matched' keeps only stays with a CXR; removing CXRs in training contradicts it")
    if config.modulator is not None and config.fair_attr not in store.cohort.columns:
        raise ConfigError(f"fair_attr '{config.fair_attr}' is not a column of cohort.csv")
    check_names(config)
    if config.fold >= store.n_folds:
        raise ConfigError(f"fold {config.fold} is out of range: the cohort has folds 0-{store.n_folds - 1}")
    if config.cxr_embedding is None and store.encoder_id is not None:
        config = config.model_copy(update={"cxr_embedding": store.encoder_id})
    return config


def check_names(config: TrainConfig) -> None:
    """The task and EHR encoder are registered (the method's names are :func:`resolve_method`'s)."""
    TASKS.get(config.task)
    EHR_ENCODERS.get(config.ehr_encoder)


def compute_run_id(config: TrainConfig, store_fingerprint: str, inputs: Mapping[str, str] | None = None,
                   method: MethodSpec | None = None) -> str:
    """Hash of the config's identity fields, the store fingerprint, :data:`PROTOCOL_VERSION` and the content
    digests of the data the run trains on (``inputs``, from :func:`run_inputs`). ``method``: the config's resolved
    method (else its modulator is looked up)."""
    identity = config.identity()
    if identity.get("cxr_weights"):  # the file's content, not its path, identifies the run
        identity["cxr_weights"] = file_sha256(identity["cxr_weights"])
    if method is not None:
        group_aware = method.needs_groups
    else:
        group_aware = identity.get("modulator") is not None and MODULATORS.get(identity["modulator"]).needs_groups
    uses_groups = bool(identity.get("selection_rules")) or group_aware
    if not uses_groups:
        identity.pop("fair_attr", None)  # read by nothing this run does: changing it must not retrain
    return config_hash({"config": identity, "store_fingerprint": store_fingerprint, "protocol": PROTOCOL_VERSION,
                        "inputs": dict(inputs or {})})


# what each key of config.json ``inputs`` names, for the one-line reason a stale run is refused with
_INPUT_NAMES = {"cohort": "data/cohort.csv", "ehr_values": "/ehr/values", "cxr_embeddings": "/cxr/embeddings",
                "cxr_images": "/cxr/images", "encoder_weights": "/cxr/encoder_weights"}
_INPUTS_CACHE: dict[tuple, dict[str, str]] = {}


def run_inputs(config: TrainConfig, store: StoreData, ws: Workspace, method: MethodSpec | None = None) -> dict[str, str]:
    """Content digests of the data a run trains on (config.json ``inputs``; part of the run id).

    ``cohort``: cohort.csv's bytes (labels, folds, attributes; hashed here, ~20 MB at MIMIC size, since it is
    a table a user can edit by hand); ``ehr_values``; for a method with a CXR branch ``cxr_embeddings``
    (``<encoder_id>:<digest>``: re-running prep's encoder under the same id with other settings changes it);
    in images mode also ``cxr_images`` and, unless ``cxr_weights`` names a file (whose content the run id
    covers already), ``encoder_weights``. The store digests are the ones prep wrote
    (:func:`mmfair.core.data.store.content_digests`, which states the trade-off)."""
    from mmfair.core.data.store import content_digests, file_digest

    uses_cxr = "cxr" in (method.modalities if method is not None else FUSIONS.get(config.fusion).modalities)
    images = config.cxr_input == "images"
    encoder_id = store.encoder_id if uses_cxr else None
    paths = (ws.cohort_csv, store.path)
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    key = (stamp, encoder_id, images)
    if key not in _INPUTS_CACHE:
        digests = content_digests(store.path, encoder_id, images=images)
        inputs = {"cohort": file_digest(ws.cohort_csv), "ehr_values": digests["ehr_values"]}
        if "cxr_embeddings" in digests:
            inputs["cxr_embeddings"] = f"{encoder_id}:{digests['cxr_embeddings']}"
        if images:
            inputs.update({k: digests[k] for k in ("cxr_images", "encoder_weights") if k in digests})
        if len(_INPUTS_CACHE) > 64:
            _INPUTS_CACHE.clear()
        _INPUTS_CACHE[key] = inputs
    inputs = dict(_INPUTS_CACHE[key])
    if images and config.cxr_weights is not None:
        inputs.pop("encoder_weights", None)
    return inputs


def inputs_changed(info: Mapping[str, Any], current: Mapping[str, str]) -> str | None:
    """Why a run's recorded ``inputs`` (its config.json) differ from ``current``, in a few words; None when equal."""
    recorded = info.get("inputs")
    if not isinstance(recorded, dict):
        return "it records no digests of the data it was trained on (an older mmfair)"
    changed = [_INPUT_NAMES.get(k, k) for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
    if not changed:
        return None
    return f"{', '.join(changed)} changed since it was trained (prep re-ran)"


def training_groups(config: TrainConfig, store: StoreData, rows: np.ndarray, device: torch.device) -> Groups:
    """Codes of ``config.fair_attr`` for the training rows (for group-aware modulators only, never a model input)."""
    names, codes = group_codes(store.cohort[config.fair_attr].to_numpy()[rows], config.fair_attr)
    return Groups(config.fair_attr, names, torch.as_tensor(codes, dtype=torch.long, device=device))


def build_model(config: TrainConfig, task: Task, store: StoreData, scaler: FoldScaler | None = None,
                method: MethodSpec | None = None) -> FusionModel:
    """The run's model; with the static modality its encoded fields (``scaler.static``) widen the EHR input, and
    without hourly EHR (``config.hourly_ehr`` False) they are its only features. ``method``: the config's resolved
    method (else it is resolved)."""
    method = method if method is not None else resolve_method(config)
    if "cxr" in method.modalities and store.cxr_embeddings is None:
        raise ConfigError(f"fusion '{config.fusion}' needs CXR embeddings, but {store.path} has none under /cxr/embeddings")
    n_hourly = store.values.shape[2] if config.hourly_ehr else 0
    spec = FusionSpec(
        n_features=n_hourly + (scaler.static_width if scaler is not None else 0),
        cxr_dim=store.cxr_dim,
        n_outputs=task.n_outputs(list(store.cohort.columns)),
        hidden_dim=config.hidden_dim,
        ehr_encoder=config.ehr_encoder,
        dropout=config.dropout,
        output_kind=task.output_kind,
        seq_len=store.values.shape[1],
        missing_token=config.missing_token,
        cxr_image=image_spec(config, store),
    )
    if method.params is None or type(method.params) is FusionParams:  # no hyperparameters: plain ``factory(spec)``
        return method.factory(spec)
    return method.factory(spec, method.params)


# ---- predictions -------------------------------------------------------------------------------
def _prediction_frame(run: LoadedRun, split: Split, present: dict[str, torch.Tensor]) -> pd.DataFrame:
    logits = predict_logits(run.model, split, run.device, present)
    scorable = run.model.scorable(present).cpu().numpy()
    probs = run.task.probabilities(logits).double().numpy()
    probs[~scorable] = np.nan
    cohort = run.store.cohort.iloc[split.rows].reset_index(drop=True)
    labels = split.labels.cpu().numpy()
    labels = labels.reshape(len(labels), -1)
    scores = run.task.prediction_frame(labels, probs, list(run.store.cohort.columns))
    frame = pd.concat([cohort[["stay_id", "fold"]], scores, cohort[["subject_id", *ATTRIBUTE_COLUMNS]]], axis=1)
    for m in MODALITIES:
        frame[f"present_{m}"] = present[m].cpu().numpy().astype(np.int64) if m in present else 0
    if not run.scaler.hourly:  # the EHR branch carries only the static channels: no hourly EHR to remove
        frame["present_ehr"] = 0
    if "static" in present:  # only runs with the static modality have the column
        frame["present_static"] = present["static"].cpu().numpy().astype(np.int64)
    return frame


def _without_static(run: LoadedRun, data: Split, keep: torch.Tensor) -> Split:
    """``data`` with the static channels of the stays where ``keep`` is False made unobserved: value 0 (the
    training median, or no category) and mask 0, as an EHR variable that was never charted. Without hourly EHR
    the branch is only these channels, so a removed stay's EHR input is all zeros."""
    n_raw, width = run.scaler.hourly_width(run.store), run.scaler.static_width
    ehr = data.inputs["ehr"].clone()
    removed = ~keep.to(ehr.device)
    ehr[removed, :, n_raw : n_raw + width] = 0.0
    ehr[removed, :, 2 * n_raw + width :] = 0.0
    return Split(data.name, data.rows, {**data.inputs, "ehr": ehr}, data.present, data.labels)


EHRTransform = Callable[[np.ndarray, EHRFeatures], np.ndarray]


def _perturbed_split(run: LoadedRun, split: str, ehr_transform: EHRTransform) -> Split:
    """The split rebuilt from raw values passed through ``ehr_transform`` (not cached)."""
    base = run.split(split)
    raw = run.store.values[base.rows].copy()  # physical units, NaN = not observed
    values = np.asarray(ehr_transform(raw, ehr_features(run)), dtype=np.float32)
    if values.shape != raw.shape:
        raise ConfigError(f"predict: ehr_transform returned shape {values.shape}, expected {raw.shape}")
    labels = run.task.label_tensor(run.store.cohort)
    return build_split(split, base.rows, run.store, run.scaler, labels, run.device, values=values,
                       image_size=run_image_size(run.config, run.store))


def predict(
    run: LoadedRun,
    split: str,
    present_override: Mapping[str, np.ndarray] | None = None,
    ehr_transform: EHRTransform | None = None,
) -> pd.DataFrame:
    """Predictions for ``split`` ('val' or 'test') in the format of ``predictions_<split>.csv``.

    ``present_override[m]``: bool array aligned with the split's rows; False removes modality ``m`` for
    that stay (AND-ed with natural presence). Without an override the frame equals the saved CSV read
    back with ``pd.read_csv(path, keep_default_na=False, na_values=[""])`` (as the evaluation core reads
    it), on the device that wrote it.

    ``ehr_transform(values, features) -> values``: applied to the split's RAW hourly values
    (float32 [N, T, F] aligned with the split's rows, physical units, NaN = not observed; ``features``
    an :class:`~mmfair.core.training.data.EHRFeatures` with the variable groups and the training fold's
    median/IQR) BEFORE the observation mask, forward fill, training-median fill and scaling: a value set
    to NaN is unobserved exactly like real absence (mask 0, then filled). ``None`` changes nothing.

    A run without hourly EHR (``hourly_ehr`` False) has no hourly values: an ``ehr_transform`` changes nothing,
    and ``present_override["ehr"]`` may only keep every stay (its EHR branch carries the static modality, which
    ``present_override["static"]`` removes).
    """
    if getattr(run.model, "kind", "nn") == "estimator":  # trees: mmfair.core.training.estimators
        from mmfair.core.training.estimators import predict_estimator

        return predict_estimator(run, split, present_override, ehr_transform)
    hourly = run.scaler.hourly
    data = run.split(split) if ehr_transform is None or not hourly else _perturbed_split(run, split, ehr_transform)
    present = dict(data.present)
    for modality, keep in (present_override or {}).items():
        keep = torch.as_tensor(np.asarray(keep, dtype=bool), device=run.device)
        if modality == "ehr" and not hourly:
            if bool(keep.all()):
                continue  # removing nothing from the hourly EHR this run does not have
            raise ConfigError(f"predict: run {run.run_id} has no hourly EHR to remove (modalities "
                              f"{', '.join(run_modalities(run.config, run.method))})")
        if modality not in present:
            if modality == "static" and bool(keep.all()):
                continue  # removing nothing from a modality this run does not have
            raise ConfigError(f"predict: unknown modality '{modality}' (have {', '.join(present)})")
        if keep.shape != present[modality].shape:
            raise ConfigError(
                f"predict: present_override['{modality}'] has {keep.numel()} values, split '{split}' has {len(data)} stays"
            )
        present[modality] = present[modality] & keep
        if modality == "static" and not bool(keep.all()):
            data = _without_static(run, data, present["static"])
    with cpu_threads(run.config.threads):
        frame = _prediction_frame(run, data, present)
    return read_predictions_text(predictions_csv_text(frame))


# ---- training ----------------------------------------------------------------------------------
def _save_state_dict(path: Path, state: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _read_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"{path}: not found (is {run_dir} a finished run folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not valid JSON ({exc}); retrain the run") from None
    if not isinstance(info, dict):
        raise InputFileError(f"{path}: not a run's config (a JSON object expected); retrain the run")
    return info


def _done_run_differs(run_dir: Path, fingerprint: str, inputs: Mapping[str, str]) -> str | None:
    """Why a folder marked DONE under this run id does not hold this run (None: it does)."""
    try:
        info = _read_info(run_dir)
    except InputFileError as exc:
        return str(exc)
    if info.get("store_fingerprint") != fingerprint:
        return f"its config.json records store fingerprint {info.get('store_fingerprint')}, the store has {fingerprint}"
    return inputs_changed(info, inputs)


def _state_mismatch(model: torch.nn.Module, state: Any) -> str | None:
    """Why ``state`` is not a state dict of ``model`` (None when every key and shape matches)."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a state dict"
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        return f"{len(missing)} tensor(s) missing, {len(extra)} unexpected (e.g. {(missing or extra)[0]})"
    for name, tensor in expected.items():
        if not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape:
            return f"tensor {name} has the wrong shape"
    return None


def _load_tensors(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of a file, every failure (truncated, not a torch file, a pickled object
    outside the weights-only allowlist) raised as :class:`InputFileError` naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputFileError(f"{path}: not found") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ValueError...
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(f"{path}: unreadable ({detail[:160]})") from None


CHECKPOINT_KEYS = ("model", "optimizer", "generator", "torch_rng", "history", "best_state", "best_score",
                   "best_epoch", "stale", "seconds")


def _discard_bad_checkpoint(path: Path, model: torch.nn.Module) -> None:
    """A ``checkpoint.pt`` that cannot resume this run (truncated, tampered, another model's) is removed with a
    warning, so the run restarts from epoch 1 instead of failing on every rerun. Checkpoints are written
    atomically, so only damage from outside (a full disk, a copy cut short) gets here."""
    if not path.exists():
        return
    try:
        state = _load_tensors(path)
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        reason = f"keys {', '.join(missing)} missing" if missing else _state_mismatch(model, state["model"])
    except InputFileError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
    if reason is not None:
        log.warning("%s cannot resume this run (%s); restarting it from epoch 1", path, reason)
        path.unlink()


def train_run(
    config: TrainConfig,
    ws: Workspace,
    progress: Progress | None = None,
    method: MethodSpec | None = None,
) -> RunResult:
    """Train one run into ``ws.runs/<run_id>/``; skip it if that folder already has DONE. ``method``: the
    config's resolved method (:func:`~mmfair.core.training.methods.resolve_method`; resolved here when not given)."""
    store = _cached_store(ws, config.cxr_embedding)
    config, method = resolve_run(config, store, method)
    if config.cxr_input == "images":
        store = _cached_store(ws, config.cxr_embedding, images=True)
    inputs = run_inputs(config, store, ws, method)
    run_id = compute_run_id(config, store.fingerprint, inputs, method)
    run_dir = ws.runs / run_id
    if (run_dir / "DONE").exists():
        reason = _done_run_differs(run_dir, store.fingerprint, inputs)
        if reason is None:
            log.info("run %s (%s, %s, fold %d) is done; skipping", run_id, config.fusion, config.task, config.fold)
            return RunResult(run_id=run_id, run_dir=run_dir, skipped=True)
        log.warning("run %s: %s; retraining it", run_id, reason)
        (run_dir / "DONE").unlink()
    if method.kind == "estimator":  # trees: fit/predict_proba on arrays
        from mmfair.core.training.estimators import train_estimator_run

        return train_estimator_run(method, config, store, run_id, run_dir, inputs, ws)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    log.info("run %s: %s on %s, fold %d, seed %d, device %s", run_id, config.fusion, config.task, config.fold, config.seed, device)
    with cpu_threads(config.threads):
        seed_everything(config.seed)
        fitted = _fit_run(method, config, store, run_dir, device, progress)
        run = LoadedRun(run_dir, config, {"run_id": run_id}, fitted.task, fitted.model, fitted.scaler, store, device,
                        method, {k: v for k, v in fitted.splits.items() if k != "train"})
        frames, rule_frames = _selected_predictions(run, fitted)
    _write_run_files(run_dir, fitted, frames, rule_frames, list(store.cohort.columns))
    info = _run_info(run, fitted, inputs, ws)
    write_json_atomic(run_dir / "config.json", info)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    write_text_atomic(run_dir / "DONE", "")
    outcome = fitted.outcome
    log.info("run %s done: best epoch %d, val selection %.4f, %.1fs", run_id, outcome.best_epoch, outcome.best_score, outcome.seconds)
    return RunResult(run_id=run_id, run_dir=run_dir, skipped=False, best_epoch=outcome.best_epoch, train_seconds=outcome.seconds)


@dataclass
class _FittedRun:
    """What :func:`_fit_run` trained: the task (class weights applied), the fold's splits and scaler, the model
    (best overall state), the trainer's outcome and the group codes a modulator trained on."""

    task: Task
    splits: dict[str, Split]
    scaler: FoldScaler
    model: FusionModel
    outcome: Any
    groups: Groups | None
    selection_epochs: dict[str, int] = field(default_factory=dict)


def _fit_run(method: MethodSpec, config: TrainConfig, store: StoreData, run_dir: Path, device: torch.device,
             progress: Progress | None) -> _FittedRun:
    """Build the fold's splits and the model, and train it (resuming from ``run_dir``'s checkpoint)."""
    task: Task = TASKS.get(config.task)
    splits, scaler = build_splits(store, task, config.fold, device, split_rule=config.split,
                                  train_cohort=config.train_cohort, image_size=run_image_size(config, store),
                                  static_fields=config.static_fields, hourly=config.hourly_ehr)
    if config.class_weights == "balanced":
        task = task.balanced(splits["train"].labels)
        log.info("class weights (balanced, from the training rows): %s", [round(w, 3) for w in task.class_weights])
    if config.train_missing_rate:
        removed = remove_cxr(splits["train"], config.train_missing_rate, config.seed)
        log.info("train_missing_rate %.2f: CXR removed from %d training stays", config.train_missing_rate, len(removed))
    model = build_model(config, task, store, scaler, method)
    _discard_bad_checkpoint(run_dir / CHECKPOINT, model)
    init_image_encoder(model, config, store, scaler)
    model = model.to(device)
    model.prepare(embedded_split(model, splits["train"], device))
    val_rows = splits["val"].rows
    val_groups = {a: store.cohort[a].to_numpy()[val_rows] for a in GROUP_ATTRIBUTES if a in store.cohort}
    if config.selection_rules:
        if config.fair_attr not in store.cohort.columns:
            raise ConfigError(f"fair_attr '{config.fair_attr}' is not a column of cohort.csv")
        val_groups.setdefault(config.fair_attr, store.cohort[config.fair_attr].to_numpy()[val_rows])
    modulator = method.build_modulator()
    needs_groups = modulator is not None and modulator.needs_groups
    groups = training_groups(config, store, splits["train"].rows, device) if needs_groups else None
    outcome = fit(
        model, task, splits, config, device, val_groups=val_groups, progress=progress,
        description=f"{method.label} {config.task} fold {config.fold} seed {config.seed}",
        checkpoint=run_dir / CHECKPOINT, modulator=modulator, groups=groups,
    )
    model.load_state_dict(outcome.state_dict)
    model.eval()
    return _FittedRun(task, splits, scaler, model, outcome, groups)


def _selected_predictions(run: LoadedRun, fitted: _FittedRun) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, pd.DataFrame]]]:
    """Validation and test predictions of the best overall epoch, and of the epoch each other selection rule
    picks from the validation history (``fitted.selection_epochs`` is filled in)."""
    config, model, outcome = run.config, fitted.model, fitted.outcome
    frames = {name: predict(run, name) for name in ("val", "test")}
    fitted.selection_epochs = choose_epochs(outcome.history, config.selection_rules, config.fair_attr, outcome.best_epoch)
    rule_frames: dict[str, dict[str, pd.DataFrame]] = {}
    for rule, epoch in fitted.selection_epochs.items():
        if rule == "overall":  # the default predictions_{val,test}.csv
            continue
        model.load_state_dict(outcome.epoch_states[epoch])
        model.eval()
        rule_frames[rule] = {name: predict(run, name) for name in ("val", "test")}
    if rule_frames:
        model.load_state_dict(outcome.state_dict)
        model.eval()
    return frames, rule_frames


def _write_run_files(run_dir: Path, fitted: _FittedRun, frames: dict[str, pd.DataFrame],
                     rule_frames: dict[str, dict[str, pd.DataFrame]], columns: list[str]) -> None:
    """Every run file but config.json and DONE."""
    write_json_atomic(run_dir / "scaling.json", fitted.scaler.to_dict())
    _save_state_dict(run_dir / "model.pt", fitted.outcome.state_dict)
    write_csv_atomic(run_dir / "history.csv", fitted.outcome.history)
    for name, frame in frames.items():
        write_text_atomic(run_dir / f"predictions_{name}.csv", predictions_csv_text(frame))
    for rule, by_split in rule_frames.items():
        for name, frame in by_split.items():
            write_text_atomic(run_dir / f"predictions_{name}_{rule}.csv", predictions_csv_text(frame))
    write_json_atomic(run_dir / "threshold.json", validation_thresholds(fitted.task, frames["val"], columns))


def _run_info(run: LoadedRun, fitted: _FittedRun, inputs: Mapping[str, str], ws: Workspace) -> dict[str, Any]:
    """config.json of a trained run (architecture doc: the resolved config and what the run measured)."""
    config, method, store, outcome, task = run.config, run.method, run.store, fitted.outcome, fitted.task
    train_split = fitted.splits["train"]
    used = fitted.model.scorable(train_split.present).cpu().numpy()
    has_cxr = train_split.present["cxr"].cpu().numpy()[used]
    info = {
        **config.model_dump(mode="json"),
        "run_id": run.run_id,
        "method": method.label,
        "modalities": run_modalities(config, method),
        "handles_missing": method.handles_missing,
        "store_fingerprint": store.fingerprint,
        "inputs": inputs,
        "protocol": PROTOCOL_VERSION,
        "mmfair_version": mmfair.__version__,
        # the share of the stays the model trained on that had no CXR (natural + train_missing_rate removals;
        # before modality dropout, which redraws every batch)
        "train_cxr_missing_share": float(1.0 - has_cxr.mean()) if has_cxr.size else None,
        "n_params": int(sum(p.numel() for p in fitted.model.parameters())),
        "best_epoch": outcome.best_epoch,
        "train_seconds": outcome.seconds,
        "peak_memory_mb": float(outcome.history["peak_memory_mb"].max()),
        "n_train": int(used.sum()),
        "class_weight_values": list(task.class_weights) if task.class_weights is not None else None,
        "provenance": collect_provenance(ws, store.fingerprint, run.device),  # mmfair.core.provenance
    }
    if config.selection_rules:
        info["selection_epochs"] = fitted.selection_epochs
    if config.modulator is not None:
        info["fair_groups"] = list(fitted.groups.names) if fitted.groups is not None else None
    return info


def stale_reason(run_dir: Path | str, ws: Workspace) -> str | None:
    """Why a finished run no longer matches the workspace's prepared data (its store fingerprint or the
    content digests of the data it trained on differ), in one line; None when it matches or when the
    workspace holds no prepared data (its predictions are then all there is to read). Cheap: the store's
    digest attributes and cohort.csv's bytes, never the arrays."""
    from mmfair.core.data.store import content_digests, file_digest, store_fingerprint

    run_dir = Path(run_dir)
    if not (ws.cohort_csv.is_file() and ws.features_h5.is_file()):
        return None
    info = _read_info(run_dir)
    fingerprint = store_fingerprint(ws.features_h5)
    if fingerprint != info.get("store_fingerprint"):
        return f"trained on store fingerprint {info.get('store_fingerprint')}, the workspace's store has {fingerprint}"
    recorded = info.get("inputs")
    if not isinstance(recorded, dict):
        return inputs_changed(info, {})
    encoder = str(recorded["cxr_embeddings"]).split(":", 1)[0] if "cxr_embeddings" in recorded else None
    try:
        digests = content_digests(ws.features_h5, encoder, images=info.get("cxr_input") == "images")
    except (OSError, KeyError) as exc:
        return f"{ws.features_h5} cannot be read ({exc})"
    current = {"cohort": file_digest(ws.cohort_csv), "ehr_values": digests["ehr_values"]}
    if encoder is not None:
        current["cxr_embeddings"] = f"{encoder}:{digests.get('cxr_embeddings')}"
    current.update({k: digests[k] for k in ("cxr_images", "encoder_weights") if k in digests and k in recorded})
    return inputs_changed(info, current)


def require_current(run_dirs: list[Path], ws: Workspace) -> list[Path]:
    """``run_dirs`` unchanged when each matches the workspace's prepared data (:func:`stale_reason`); else
    :class:`InputFileError` naming the first that does not — so an evaluation command never re-scores a run
    on data it was not trained on."""
    for run_dir in run_dirs:
        reason = stale_reason(run_dir, ws)
        if reason is not None:
            raise InputFileError(f"{run_dir}: not re-scored: {reason}; retrain it with `mmfair train` (same options)")
    return run_dirs


def training_fields(info: dict[str, Any]) -> dict[str, Any]:
    """The ``TrainConfig`` fields of a run's config.json."""
    return {k: v for k, v in info.items() if k in TrainConfig.model_fields}


def load_run(run_dir: Path | str, device: str | torch.device = "cpu", ws: Workspace | None = None) -> LoadedRun:
    """Load a finished run. The workspace defaults to the run folder's grandparent (``<ws>/runs/<id>``)."""
    run_dir = Path(run_dir)
    if not (run_dir / "DONE").exists():
        raise InputFileError(f"{run_dir}: not a finished run (no DONE file)")
    info = _read_info(run_dir)
    try:
        config = TrainConfig(**training_fields(info))
    except ValueError as exc:  # pydantic's ValidationError
        raise InputFileError(f"{run_dir / 'config.json'}: not a valid run config ({str(exc).splitlines()[0]})") from None
    ws = ws or Workspace.resolve(run_dir.resolve().parent.parent)
    store = _cached_store(ws, config.cxr_embedding, images=config.cxr_input == "images")
    if store.fingerprint != info.get("store_fingerprint"):
        raise InputFileError(
            f"{run_dir}: trained on store fingerprint {info.get('store_fingerprint')}, but {store.path} has "
            f"{store.fingerprint}; retrain after a new prep"
        )
    method = resolve_method(config)
    reason = inputs_changed(info, run_inputs(config, store, ws, method))
    if reason is not None:
        raise InputFileError(f"{run_dir}: not re-scored: {reason}; retrain it with `mmfair train` (same options)")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    task: Task = TASKS.get(config.task)
    scaler = FoldScaler.load(run_dir / "scaling.json")
    if method.kind == "estimator":  # trees: mmfair.core.training.estimators
        from mmfair.core.training.estimators import load_estimator

        return LoadedRun(run_dir, config, info, task, load_estimator(run_dir, method, config, task, store), scaler,
                         store, torch.device("cpu"), method)
    model = build_model(config, task, store, scaler, method)
    state = _load_tensors(run_dir / "model.pt")
    reason = _state_mismatch(model, state)
    if reason is not None:
        raise InputFileError(f"{run_dir / 'model.pt'}: not this run's model ({reason}); retrain the run")
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedRun(run_dir, config, info, task, model, scaler, store, device, method)
