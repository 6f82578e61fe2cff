"""The store and cohort loaded for training, the fold rule, the EHR scaler, and device-resident splits.

DESIGN §1: for run fold k, test = fold k, validation = fold (k+1) mod n, training = the other folds.
DESIGN §3.2 (load-time rules, per run fold): the mask is "observed in this hour", computed before any
filling; then forward fill, then the training-fold median; scaling by median/IQR of the training-fold
observed hours (IQR 0 → 1). :class:`EHRScaler` fits on the training rows only and is saved to
``scaling.json``. Each split lives on the device as tensors; batches are slices by index (DESIGN §6).
The optional static modality's encoded fields join the EHR branch as time-constant, always-observed
channels; a run without the hourly variables (``TrainConfig.hourly_ehr`` False: ``--modalities static`` or
``cxr,static``) feeds the EHR branch those channels alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from mmfair.core.data.store import open_store
from mmfair.core.errors import ConfigError, InputFileError
from mmfair.core.workspace import Workspace

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MODALITIES = ("ehr", "cxr")
ATTRIBUTE_COLUMNS = (
    "gender",
    "age_group",
    "race_group",
    "insurance_group",
    "language_group",
    "marital_status",
    "admission_type",
    "anchor_year_group",
)
REQUIRED_COHORT_COLUMNS = ("stay_id", "subject_id", "fold", *ATTRIBUTE_COLUMNS)
ERR_TEMPORAL_SIDE = ("temporal split: cohort.csv has no stay with temporal_split '{side}' (prep.json temporal_split "
                     "counts each side's stays and CXRs; prep's temporal_train_years / temporal_test_years set the "
                     "periods)")


@dataclass
class StoreData:
    """``cohort.csv`` + the arrays of ``features.h5`` that training needs, in cohort order."""

    cohort: pd.DataFrame
    values: np.ndarray  # float32 [N, T, F], NaN = not observed
    feature_names: list[str]
    cxr_row: np.ndarray  # int64 [N], -1 = no image
    cxr_embeddings: np.ndarray | None  # float32 [N_img, D]
    encoder_id: str | None
    fingerprint: str
    path: Path = field(default_factory=Path)
    feature_groups: list[str] = field(default_factory=list)  # per feature (vitals/labs/neuro/output); [] if unknown
    # images mode only (``load_store(..., images=True)``): the uint8 store images, the encoder's attrs and weights
    cxr_images: np.ndarray | None = None  # uint8 [N_img, S, S]
    encoder_attrs: dict[str, Any] = field(default_factory=dict)
    encoder_weights: dict[str, np.ndarray] | None = None
    image_size: int | None = None  # side S of /cxr/images (prep --image-size); None without stored images

    @property
    def n_folds(self) -> int:
        return int(self.cohort["fold"].max()) + 1

    @property
    def cxr_dim(self) -> int:
        return 0 if self.cxr_embeddings is None else int(self.cxr_embeddings.shape[1])


def _decode(names: Any) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def read_cohort(path: Path) -> pd.DataFrame:
    if not Path(path).exists():
        raise InputFileError(f"{path}: not found; run `mmfair prep` first")
    cohort = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in REQUIRED_COHORT_COLUMNS if c not in cohort.columns]
    if missing:
        raise InputFileError(f"{path}: missing column(s) {', '.join(missing)}")
    bad = cohort.loc[~cohort["fold"].isin(range(100)), "fold"]
    if len(bad):
        raise InputFileError(f"{path}: column 'fold' has invalid value '{bad.iloc[0]}' (expected an integer 0-4)")
    return cohort


def resolve_encoder_id(h5: h5py.File, requested: str | None, path: Path) -> str | None:
    available = sorted(h5["cxr/embeddings"].keys()) if "cxr/embeddings" in h5 else []
    if requested is not None:
        if requested not in available:
            raise ConfigError(
                f"{path}: no CXR embeddings '{requested}' under /cxr/embeddings (available: {', '.join(available) or 'none'})"
            )
        return requested
    if len(available) > 1:
        raise ConfigError(f"{path}: several CXR embeddings ({', '.join(available)}); choose one with cxr_embedding")
    return available[0] if available else None


def load_store(ws: Workspace, cxr_embedding: str | None = None, images: bool = False) -> StoreData:
    """Read cohort.csv and features.h5 (opened with prep's ``open_store``, which checks that ``/stay_id``
    equals the cohort's ``stay_id`` column and the schema version). ``images`` also reads ``/cxr/images``,
    the encoder's attrs and its saved weights (``train --cxr-input images``)."""
    cohort = read_cohort(ws.cohort_csv)
    path = ws.features_h5
    with open_store(path, ws.cohort_csv) as h5:  # checks schema version and /stay_id == cohort stay_id
        for key in ("ehr/values", "cxr/row"):
            if key not in h5:
                raise InputFileError(f"{path}: dataset /{key} is missing")
        fingerprint = h5.attrs.get("fingerprint")
        if fingerprint is None:
            raise InputFileError(f"{path}: root attribute 'fingerprint' is missing")
        values = h5["ehr/values"][()].astype(np.float32, copy=False)
        names = _decode(h5["ehr/feature_names"][()]) if "ehr/feature_names" in h5 else [f"f{i}" for i in range(values.shape[2])]
        groups = _decode(h5["ehr/feature_groups"][()]) if "ehr/feature_groups" in h5 else []
        cxr_row = h5["cxr/row"][()].astype(np.int64)
        encoder_id = resolve_encoder_id(h5, cxr_embedding, path)
        embeddings = None if encoder_id is None else h5[f"cxr/embeddings/{encoder_id}"][()].astype(np.float32)
        cxr_images, encoder_attrs, encoder_weights = None, {}, None
        shape = h5["cxr/images"].shape if "cxr/images" in h5 else ()
        image_size = int(shape[1]) if len(shape) == 3 and shape[0] > 0 else None
        if images:
            if "cxr/images" not in h5:
                raise InputFileError(f"{path}: dataset /cxr/images is missing (needed by --cxr-input images)")
            cxr_images = h5["cxr/images"][()]
            if encoder_id is not None:
                from mmfair.core.data.store import read_encoder_weights

                encoder_attrs = {k: (v.item() if isinstance(v, np.generic) else v)
                                 for k, v in h5[f"cxr/embeddings/{encoder_id}"].attrs.items()}
                encoder_weights = read_encoder_weights(h5, encoder_id)
    if embeddings is not None and cxr_row.max(initial=-1) >= len(embeddings):
        raise InputFileError(f"{path}: /cxr/row points past /cxr/embeddings/{encoder_id} ({len(embeddings)} rows)")
    return StoreData(
        cohort=cohort,
        values=values,
        feature_names=names,
        cxr_row=cxr_row,
        cxr_embeddings=embeddings,
        encoder_id=encoder_id,
        fingerprint=str(fingerprint),
        path=path,
        feature_groups=groups,
        cxr_images=cxr_images,
        encoder_attrs=encoder_attrs,
        encoder_weights=encoder_weights,
        image_size=image_size,
    )


def training_image_size(requested: int | None, store: StoreData) -> int | None:
    """Images mode: the side the run trains at — the store's images' (``prep --image-size``), so a run never
    silently trains at another size; ``requested`` (``--image-size``) must equal it."""
    if store.image_size is None:
        return requested
    if requested is not None and requested != store.image_size:
        raise ConfigError(f"image_size {requested} differs from the {store.image_size}-px CXR images in {store.path} "
                          f"(prep --image-size); drop --image-size, or prep a workspace with --image-size {requested}")
    return store.image_size


def fold_rows(folds: np.ndarray, fold: int, n_folds: int = 5) -> dict[str, np.ndarray]:
    """Row indices per split: test = ``fold``, val = ``(fold + 1) % n_folds``, train = the rest."""
    if not 0 <= fold < n_folds:
        raise ConfigError(f"fold {fold} is out of range: the cohort has folds 0-{n_folds - 1}")
    folds = np.asarray(folds)
    val_fold = (fold + 1) % n_folds
    return {
        "train": np.flatnonzero((folds != fold) & (folds != val_fold)),
        "val": np.flatnonzero(folds == val_fold),
        "test": np.flatnonzero(folds == fold),
    }


def temporal_rows(folds: np.ndarray, temporal_split: np.ndarray, fold: int,
                  n_folds: int = 5) -> dict[str, np.ndarray]:
    """The temporal split from prep's ``temporal_split`` column (DESIGN §3.1): test = every ``test`` stay; the
    ``train`` stays are split by the fold rule without a test fold: validation = fold ``(fold + 1) % n_folds``,
    training = the others. Stays with an empty value (outside both periods) are left out.

    The test set is the same for every fold and seed, so temporal repeats vary the training/validation split
    and the seed, not the test stays: they are not independent folds. Prep leaves a patient with a test stay
    off the training side, so no patient crosses the cut."""
    if not 0 <= fold < n_folds:
        raise ConfigError(f"fold {fold} is out of range: the cohort has folds 0-{n_folds - 1}")
    side = pd.Series(temporal_split, dtype="object").fillna("").astype(str).str.strip().to_numpy()
    unknown = sorted(set(side) - {"train", "test", ""})
    if unknown:
        raise ConfigError(f"cohort.csv: column 'temporal_split' has value '{unknown[0]}', expected train, test or "
                          "empty")
    for name in ("train", "test"):
        if not (side == name).any():
            raise ConfigError(ERR_TEMPORAL_SIDE.format(side=name))
    folds = np.asarray(folds)
    train_side = side == "train"
    val_fold = (fold + 1) % n_folds
    return {
        "train": np.flatnonzero(train_side & (folds != val_fold)),
        "val": np.flatnonzero(train_side & (folds == val_fold)),
        "test": np.flatnonzero(side == "test"),
    }


def run_rows(
    store: "StoreData", fold: int, split_rule: str = "random", train_cohort: str = "full"
) -> dict[str, np.ndarray]:
    """Row indices per split for a run: the fold rule (``random``) or :func:`temporal_rows` (``temporal``);
    with ``train_cohort="matched"`` training and validation keep only the stays with a CXR (the test rows are
    always the whole test fold; the evaluated cohort is chosen at evaluation)."""
    folds = store.cohort["fold"].to_numpy()
    if split_rule == "temporal":
        if "temporal_split" not in store.cohort.columns:
            raise ConfigError("temporal split: cohort.csv has no column 'temporal_split' (rerun prep)")
        rows = temporal_rows(folds, store.cohort["temporal_split"].to_numpy(), fold, store.n_folds)
    elif split_rule == "random":
        rows = fold_rows(folds, fold, store.n_folds)
    else:
        raise ConfigError(f"unknown split '{split_rule}'. Available: random, temporal")
    if train_cohort == "matched":
        with_cxr = store.cxr_row >= 0
        rows = {**rows, "train": rows["train"][with_cxr[rows["train"]]], "val": rows["val"][with_cxr[rows["val"]]]}
    elif train_cohort != "full":
        raise ConfigError(f"unknown train cohort '{train_cohort}'. Available: full, matched")
    for name in ("train", "val"):
        if len(rows[name]) == 0:
            raise ConfigError(f"fold {fold} ({split_rule} split, {train_cohort} cohort): the {name} split is empty")
    return rows


def observed_mask(values: np.ndarray) -> np.ndarray:
    """1 where a value was observed in the hour, computed before any filling."""
    return (~np.isnan(values)).astype(np.float32)


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Carry the last observation forward along time (axis 1); hours before the first stay NaN."""
    T = values.shape[1]
    idx = np.where(~np.isnan(values), np.arange(T)[None, :, None], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.take_along_axis(values, idx, axis=1)


class EHRScaler:
    """Median/IQR scaling fitted on training-fold observed hours (sklearn-style ``fit``/``transform``).

    ``fit`` sets ``median_``, ``iqr_`` (1 where the IQR is 0 or undefined) and ``fill_`` (the training
    median used after forward fill; 0 in scaled units). A feature never observed in training gets
    median 0, IQR 1. ``transform`` returns ``(scaled, mask)``, both float32 [N, T, F].
    """

    def __init__(self, feature_names: list[str] | None = None) -> None:
        self.feature_names = feature_names

    def fit(self, values: np.ndarray) -> "EHRScaler":
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        observed = ~np.isnan(flat)
        median = np.zeros(flat.shape[1])
        iqr = np.ones(flat.shape[1])
        for j in range(flat.shape[1]):
            col = flat[observed[:, j], j]
            if col.size == 0:
                name = self.feature_names[j] if self.feature_names else j
                log.warning("feature %s is never observed in the training fold: median 0, IQR 1", name)
                continue
            q25, q50, q75 = np.percentile(col, [25, 50, 75])
            median[j] = q50
            iqr[j] = q75 - q25 if q75 > q25 else 1.0
        self.median_, self.iqr_, self.fill_ = median, iqr, median.copy()
        self.n_fit_rows_ = int(values.shape[0])
        return self

    def transform(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = observed_mask(values)
        filled = forward_fill(values.astype(np.float32, copy=False))
        filled = np.where(np.isnan(filled), self.fill_.astype(np.float32), filled)
        scaled = (filled - self.median_.astype(np.float32)) / self.iqr_.astype(np.float32)
        return scaled.astype(np.float32, copy=False), mask

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "median-iqr",
            "feature_names": list(self.feature_names or []),
            "median": self.median_.tolist(),
            "iqr": self.iqr_.tolist(),
            "fill": self.fill_.tolist(),
            "n_fit_stays": self.n_fit_rows_,
            "mask": "1 = observed in the hour, computed before filling",
            "fill_rule": "forward fill, then the training-fold median",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EHRScaler":
        scaler = cls(d.get("feature_names") or None)
        scaler.median_ = np.asarray(d["median"], dtype=np.float64)
        scaler.iqr_ = np.asarray(d["iqr"], dtype=np.float64)
        scaler.fill_ = np.asarray(d["fill"], dtype=np.float64)
        scaler.n_fit_rows_ = int(d.get("n_fit_stays", 0))
        return scaler

    @classmethod
    def load(cls, path: Path) -> "EHRScaler":
        return cls.from_dict(json.loads(Path(path).read_text()))


class EmbeddingScaler:
    """Per-dimension standardisation of the cached CXR embeddings, fitted on training-fold images only.

    ``fit`` sets ``mean_`` and ``std_`` (1 where a dimension is constant); ``transform`` maps
    ``(x − mean) / std``. The frozen encoder's features have large shared offsets and scales, which a
    small head learns slowly from; standardising them is the usual linear-probe practice.
    """

    def fit(self, embeddings: np.ndarray) -> "EmbeddingScaler":
        x = np.asarray(embeddings, dtype=np.float64)
        if x.shape[0] == 0:
            raise ValueError("no CXR embeddings in the training fold to fit the embedding scaler on")
        std = x.std(axis=0)
        self.mean_ = x.mean(axis=0)
        self.std_ = np.where(std > 1e-8, std, 1.0)
        self.n_fit_images_ = int(x.shape[0])
        return self

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        return ((embeddings - self.mean_) / self.std_).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "mean-std", "mean": self.mean_.tolist(), "std": self.std_.tolist(),
                "n_fit_images": self.n_fit_images_}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EmbeddingScaler":
        scaler = cls()
        scaler.mean_ = np.asarray(d["mean"], dtype=np.float64)
        scaler.std_ = np.asarray(d["std"], dtype=np.float64)
        scaler.n_fit_images_ = int(d.get("n_fit_images", 0))
        return scaler


class FoldScaler:
    """Every modality's statistics for one run fold, fitted on the training rows only (``scaling.json``).

    ``hourly=False`` (a run without the hourly EHR variables, ``TrainConfig.hourly_ehr``): no EHR scaler
    (``ehr`` is None, written as ``"ehr": null``) and the EHR branch carries the static channels only."""

    def __init__(self, feature_names: list[str] | None = None, static_fields: tuple[str, ...] = (),
                 hourly: bool = True) -> None:
        self.ehr: EHRScaler | None = EHRScaler(feature_names) if hourly else None
        self.cxr: EmbeddingScaler | None = None
        self.static_fields = tuple(static_fields)
        self.static: Any = None  # a training.static.StaticEncoder when the static modality is on

    @property
    def hourly(self) -> bool:
        """Whether the hourly EHR variables enter the EHR branch."""
        return self.ehr is not None

    @property
    def static_width(self) -> int:
        return 0 if self.static is None else self.static.width_

    def hourly_width(self, store: "StoreData") -> int:
        """Channels of hourly variables at the front of the EHR branch's values (0 without hourly EHR)."""
        return int(store.values.shape[2]) if self.hourly else 0

    def fit(self, store: "StoreData", rows: np.ndarray) -> "FoldScaler":
        if not self.hourly and not self.static_fields:
            raise ConfigError("a run without the hourly EHR variables needs static fields: its EHR branch would be empty")
        if self.ehr is not None:
            self.ehr.fit(store.values[rows])
        if self.static_fields:
            from mmfair.core.training.static import StaticEncoder

            self.static = StaticEncoder(self.static_fields).fit(store.cohort.iloc[rows])
        if store.cxr_embeddings is not None:
            cxr_rows = store.cxr_row[rows]
            cxr_rows = cxr_rows[cxr_rows >= 0]
            if cxr_rows.size:
                self.cxr = EmbeddingScaler().fit(store.cxr_embeddings[cxr_rows])
        return self

    def transform_cxr(self, embeddings: np.ndarray) -> np.ndarray:
        return embeddings if self.cxr is None else self.cxr.transform(embeddings)

    def to_dict(self) -> dict[str, Any]:
        out = {"ehr": None if self.ehr is None else self.ehr.to_dict(),
               "cxr": None if self.cxr is None else self.cxr.to_dict()}
        if self.static is not None:
            out["static"] = self.static.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FoldScaler":
        scaler = cls()
        scaler.ehr = None if d.get("ehr") is None else EHRScaler.from_dict(d["ehr"])  # None: no hourly EHR
        scaler.cxr = None if d.get("cxr") is None else EmbeddingScaler.from_dict(d["cxr"])
        if d.get("static") is not None:
            from mmfair.core.training.static import StaticEncoder

            scaler.static = StaticEncoder.from_dict(d["static"])
            scaler.static_fields = scaler.static.fields
        return scaler

    @classmethod
    def load(cls, path: Path) -> "FoldScaler":
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class Split:
    """One split on the device: ``rows`` index the cohort; ``batch(idx)`` slices every tensor."""

    name: str
    rows: np.ndarray
    inputs: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: torch.Tensor | slice, present: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        present = self.present if present is None else present
        return {
            "inputs": {m: x[index] for m, x in self.inputs.items()},
            "present": {m: p[index] for m, p in present.items()},
            "labels": self.labels[index],
        }


@dataclass(frozen=True)
class EHRFeatures:
    """What an ``ehr_transform`` may use besides the raw values: per feature its name, its variable group
    (``vitals``/``labs``/``neuro``/``output``) and the training fold's median and IQR (physical units)."""

    names: list[str]
    groups: list[str]
    median: np.ndarray
    iqr: np.ndarray


def build_split(
    name: str, rows: np.ndarray, store: StoreData, scaler: FoldScaler, labels: torch.Tensor, device: torch.device,
    values: np.ndarray | None = None,
    image_size: int | None = None,
) -> Split:
    """``values``: raw hourly values [len(rows), T, F] to use instead of ``store.values[rows]`` (a test-time
    EHR perturbation); the mask, forward fill, median fill and scaling are then computed from them.

    The EHR branch's input is ``[hourly values ‖ static values ‖ hourly mask ‖ static mask]`` (F + S values
    then F + S masks); without hourly EHR (``scaler.hourly`` False) it is ``[static values ‖ static mask]``
    and ``values`` is ignored. ``present["ehr"]`` is the EHR *branch's* presence (always True here; in a run
    without hourly EHR the branch carries the static channels)."""
    T = store.values.shape[1]
    if scaler.ehr is not None:
        scaled, mask = scaler.ehr.transform(store.values[rows] if values is None else values)
    else:
        scaled = mask = np.zeros((len(rows), T, 0), dtype=np.float32)
    if scaler.static is not None:  # the static modality: time-constant, always-observed channels
        static = np.repeat(scaler.static.transform(store.cohort.iloc[rows])[:, None, :], T, axis=1)
        scaled = np.concatenate([scaled, static], axis=2)
        mask = np.concatenate([mask, np.ones_like(static)], axis=2)
    ehr = torch.from_numpy(np.concatenate([scaled, mask], axis=2))
    cxr_row = store.cxr_row[rows]
    present = {"ehr": torch.ones(len(rows), dtype=torch.bool), "cxr": torch.from_numpy(cxr_row >= 0)}
    if scaler.static is not None:
        present["static"] = torch.ones(len(rows), dtype=torch.bool)
    inputs = {"ehr": ehr}
    if image_size is not None:  # images mode: uint8 images at the training size, zeros for absent stays
        if store.cxr_images is None:
            raise ConfigError("images mode: the store was loaded without its images (load_store(..., images=True))")
        from mmfair.core.encoders.cxr import resize_uint8

        images = np.zeros((len(rows), image_size, image_size), dtype=np.uint8)
        have = cxr_row >= 0
        if have.any():
            images[have] = resize_uint8(torch.from_numpy(store.cxr_images[cxr_row[have]]), image_size).numpy()
        inputs["cxr"] = torch.from_numpy(images)
    elif store.cxr_embeddings is not None:
        cxr = np.zeros((len(rows), store.cxr_dim), dtype=np.float32)  # placeholder for absent images
        cxr[cxr_row >= 0] = scaler.transform_cxr(store.cxr_embeddings[cxr_row[cxr_row >= 0]])
        inputs["cxr"] = torch.from_numpy(cxr)
    return Split(
        name=name,
        rows=rows,
        inputs={m: x.to(device) for m, x in inputs.items()},
        present={m: p.to(device) for m, p in present.items()},
        labels=labels[torch.as_tensor(rows, dtype=torch.long)].to(device),
    )


def build_splits(
    store: StoreData,
    task: Any,
    fold: int,
    device: torch.device,
    scaler: FoldScaler | None = None,
    names: tuple[str, ...] = SPLITS,
    split_rule: str = "random",
    train_cohort: str = "full",
    image_size: int | None = None,
    static_fields: tuple[str, ...] = (),
    hourly: bool = True,
) -> tuple[dict[str, Split], FoldScaler]:
    """Splits for run ``fold`` (rows from :func:`run_rows`); the scalers are fitted on the training rows unless
    given. ``hourly=False``: the EHR branch carries the ``static_fields`` channels only (no hourly variables)."""
    rows = run_rows(store, fold, split_rule, train_cohort)
    if scaler is None:
        scaler = FoldScaler(store.feature_names, static_fields, hourly=hourly).fit(store, rows["train"])
    labels = task.label_tensor(store.cohort)
    splits = {name: build_split(name, rows[name], store, scaler, labels, device, image_size=image_size)
              for name in names}
    return splits, scaler


def remove_cxr(split: Split, rate: float, seed: int) -> np.ndarray:
    """CareBench's train-time protocol with the ONE removal rule of evaluation's MCAR scenario
    (:func:`mmfair.core.evaluation.scenarios.stratified_removal`): the CXR is removed from exactly
    ``round(rate × n)`` of the split's ``n`` stays that have one (``present["cxr"]`` set False, halves up),
    stratified on the label with largest remainders — binary and length of stay on the label, phenotypes
    (multilabel) on the first phenotype label, exactly as ``eval-missing`` stratifies — seeded, so the same
    stays, labels, rate and seed give the same mask at train and at test time. Only the split passed in is
    touched: training calls it on the training split, so validation stays keep their CXR (CareBench also
    removes it from validation; mmfair selects checkpoints on validation as recorded). Returns the removed
    rows' positions in the split."""
    from mmfair.core.evaluation.scenarios import stratified_removal

    present = split.present["cxr"].cpu().numpy().astype(bool)
    labels = split.labels.cpu().numpy()
    strata = labels if labels.ndim == 1 else labels[:, 0]
    if np.all(np.isfinite(strata)) and np.all(np.mod(strata, 1) == 0):
        strata = strata.astype(np.int64)  # 1.0 and 1 are one stratum, as in the predictions files
    keep = stratified_removal(present, strata, float(rate), int(seed))
    out = np.flatnonzero(present & ~keep)
    present = present & keep
    split.present["cxr"] = torch.from_numpy(present).to(split.present["cxr"].device)
    return out
