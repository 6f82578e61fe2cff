"""The HDF5 store ``features.h5`` (DESIGN §3.2): writing, validating on open, fingerprints.

Layout::

    attrs: mmfair_version, schema_version, source, config (JSON), fingerprint
    /stay_id                     int64 [N]            equals cohort.csv's stay_id column
    /ehr/values                  float32 [N, W, F]    NaN = unobserved
    /ehr/feature_names           str [F]
    /ehr/feature_groups          str [F]
    /cxr/images                  uint8 [N_img, S, S]  chunked (1, S, S), gzip
    /cxr/row                     int64 [N]            row of /cxr/images, −1 = no image
    /cxr/embeddings/<encoder_id> float16 [N_img, D]   attrs from the encoder
    /cxr/encoder_weights/<encoder_id>/<tensor>        the encoder's backbone state dict

Content digests (``content_sha256`` attrs on /ehr/values, /cxr/images, each embedding dataset and each
weights group; :func:`content_digests`) are what a run's identity records about the arrays it trained on
(DESIGN §3.3). They are computed once, by the writer, from the bytes it writes, in the same staged step as
the data — so reading them costs an attribute read, where rehashing on every ``train``/``eval`` would read
the whole store (20,000 uint8 images of 256² are 1.3 GB: ~2 s of sha256 at the 0.76 GB/s measured on the
2-core CI machine by ``hashlib.sha256`` over 200 MB of random bytes). The trade-off: an array edited in
place by something other than these writers keeps its old digest; mmfair never does that, and a store
without a digest (an older mmfair's) is hashed from its content instead.

``inputs_fingerprint`` (prep's reuse key) hashes the small hosp/icu tables in full and keys the large event
tables on size, mtime and sampled blocks; see its docstring for the trade-off.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

import mmfair
from mmfair.core.errors import InputFileError

SCHEMA_VERSION = "1"
IMAGE_GZIP_LEVEL = 1
CONTENT_ATTR = "content_sha256"
DIGEST_LENGTH = 16

ERR_NO_STORE = "{path}: feature store not found (run `mmfair prep` first)"
ERR_NOT_HDF5 = "{path}: not a readable HDF5 feature store ({detail})"
ERR_SCHEMA = "{path}: schema_version {found!r}, this mmfair reads {expected!r} (re-run `mmfair prep`)"
ERR_STAY_MISMATCH = ("{path}: /stay_id does not match the stay_id column of {csv} ({detail}); the two files come "
                     "from different prep runs — re-run `mmfair prep`")
ERR_NO_STAY_COLUMN = "{csv}: column 'stay_id' not found"


def write_store(path: Path, *, stay_ids: np.ndarray, values: np.ndarray, feature_names: list[str],
                feature_groups: list[str], images: np.ndarray, cxr_row: np.ndarray,
                attrs: dict[str, Any]) -> None:
    """Write a complete store to ``path`` (the caller renames it into place).

    Parameters
    ----------
    path : Path
        Destination (normally a temporary name beside ``data/features.h5``).
    stay_ids : int64 [N]
    values : float32 [N, W, F]
    feature_names, feature_groups : list[str] of length F
    images : uint8 [N_img, S, S]
    cxr_row : int [N], −1 where a stay has no image
    attrs : dict
        Root attributes; dicts and lists are stored as JSON strings.
    """
    str_dtype = h5py.string_dtype(encoding="utf-8")
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = _attr_value(value)
        f.create_dataset("stay_id", data=np.asarray(stay_ids, dtype=np.int64))
        ehr = f.create_group("ehr")
        n, w, k = values.shape
        values = values.astype(np.float32, copy=False)
        ds = ehr.create_dataset("values", data=values, chunks=(max(1, min(n, 256)), w, k) if n else None)
        ds.attrs[CONTENT_ATTR] = array_digest(values)
        ehr.create_dataset("feature_names", data=np.array(feature_names, dtype=object), dtype=str_dtype)
        ehr.create_dataset("feature_groups", data=np.array(feature_groups, dtype=object), dtype=str_dtype)
        cxr = f.create_group("cxr")
        size = images.shape[1] if images.ndim == 3 else 0
        ds = cxr.create_dataset("images", data=images, dtype=np.uint8,
                                chunks=(1, size, size) if len(images) else None,
                                compression="gzip" if len(images) else None,
                                compression_opts=IMAGE_GZIP_LEVEL if len(images) else None)
        ds.attrs[CONTENT_ATTR] = array_digest(np.asarray(images, dtype=np.uint8))
        cxr.create_dataset("row", data=np.asarray(cxr_row, dtype=np.int64))
        cxr.create_group("embeddings")


def add_embeddings(
    path: Path, encoder_id: str, embeddings: np.ndarray, attrs: dict[str, Any],
    weights: dict[str, np.ndarray] | None = None,
) -> None:
    """Add (or replace) ``/cxr/embeddings/<encoder_id>`` in an existing store file, and with ``weights`` (the
    backbone's state dict as arrays) ``/cxr/encoder_weights/<encoder_id>/<tensor name>``, from which
    ``train --cxr-input images`` starts its fine-tuning."""
    with h5py.File(path, "a") as f:
        group = f.require_group("cxr/embeddings")
        if encoder_id in group:
            del group[encoder_id]
        embeddings = np.asarray(embeddings, dtype=np.float16)
        ds = group.create_dataset(encoder_id, data=embeddings)
        for key, value in attrs.items():
            ds.attrs[key] = _attr_value(value)
        ds.attrs[CONTENT_ATTR] = array_digest(embeddings)  # after the caller's attrs: never theirs
        weights_group = f.require_group("cxr/encoder_weights")
        if encoder_id in weights_group:
            del weights_group[encoder_id]
        if weights is not None:
            tensors = weights_group.create_group(encoder_id)
            arrays = {name: np.asarray(array) for name, array in weights.items()}
            for name, array in arrays.items():
                tensors.create_dataset(name, data=array)
            tensors.attrs[CONTENT_ATTR] = weights_digest(arrays)


def read_encoder_weights(h5: h5py.File, encoder_id: str) -> dict[str, np.ndarray] | None:
    """The saved backbone state dict of ``encoder_id`` (arrays), or None when the store has none for it."""
    group = h5.get(f"cxr/encoder_weights/{encoder_id}")
    if group is None:
        return None
    return {name: group[name][()] for name in group}


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (C order), shortened to 16 hex digits."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    if array.size:
        h.update(memoryview(array).cast("B"))  # no copy of a large array
    return h.hexdigest()[:DIGEST_LENGTH]


def weights_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over a state dict's tensor names and contents (name order), 16 hex digits."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(f"{name}\t{array_digest(arrays[name])}\n".encode())
    return h.hexdigest()[:DIGEST_LENGTH]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB blocks), 16 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:DIGEST_LENGTH]


def content_digests(path: Path, encoder_id: str | None, images: bool = False) -> dict[str, str]:
    """The content digests a run's identity records: ``ehr_values``; with ``encoder_id`` ``cxr_embeddings``;
    with ``images`` also ``cxr_images`` and (when the store has them) ``encoder_weights``.

    Each is the ``content_sha256`` attr its writer stored, or, for a store written before digests existed,
    the digest of the content itself (the same value the writer would have stored)."""
    out: dict[str, str] = {}
    with h5py.File(path, "r") as f:
        out["ehr_values"] = _dataset_digest(f["ehr/values"])
        if encoder_id is not None and f"cxr/embeddings/{encoder_id}" in f:
            out["cxr_embeddings"] = _dataset_digest(f[f"cxr/embeddings/{encoder_id}"])
        if images:
            if "cxr/images" in f:
                out["cxr_images"] = _dataset_digest(f["cxr/images"])
            group = f.get(f"cxr/encoder_weights/{encoder_id}") if encoder_id is not None else None
            if group is not None:
                stored = group.attrs.get(CONTENT_ATTR)
                out["encoder_weights"] = str(stored) if stored is not None else \
                    weights_digest({name: group[name][()] for name in group})
    return out


def _dataset_digest(ds: h5py.Dataset) -> str:
    stored = ds.attrs.get(CONTENT_ATTR)
    return str(stored) if stored is not None else array_digest(ds[()])


def _attr_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)) or value is None:
        return json.dumps(value, sort_keys=True, default=_json_default)
    if isinstance(value, Path):
        return str(value)
    return value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def open_store(path: Path, cohort_csv: Path) -> h5py.File:
    """Open ``features.h5`` read-only after checking it belongs with ``cohort.csv``.

    Parameters
    ----------
    path : Path
        The store.
    cohort_csv : Path
        The cohort table whose ``stay_id`` column must equal ``/stay_id`` element by element.

    Returns
    -------
    h5py.File
        Open in read-only mode; the caller closes it (it is a context manager).

    Raises
    ------
    InputFileError
        When the store is missing, unreadable, of another schema version, or its stays differ from
        the cohort table's.
    """
    path, cohort_csv = Path(path), Path(cohort_csv)
    if not path.is_file():
        raise InputFileError(ERR_NO_STORE.format(path=path))
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(ERR_NOT_HDF5.format(path=path, detail=exc)) from None
    try:
        found = str(f.attrs.get("schema_version", ""))
        if found != SCHEMA_VERSION:
            raise InputFileError(ERR_SCHEMA.format(path=path, found=found, expected=SCHEMA_VERSION))
        _check_stays(path, f["stay_id"][:], cohort_csv)
    except BaseException:
        f.close()
        raise
    return f


def _check_stays(path: Path, stored: np.ndarray, cohort_csv: Path) -> None:
    if not cohort_csv.is_file():
        raise InputFileError(f"{cohort_csv}: cohort table not found (run `mmfair prep` first)")
    try:
        column = pd.read_csv(cohort_csv, usecols=["stay_id"], dtype={"stay_id": "int64"})["stay_id"].to_numpy()
    except ValueError:
        raise InputFileError(ERR_NO_STAY_COLUMN.format(csv=cohort_csv)) from None
    if len(column) != len(stored):
        detail = f"{len(stored)} stays in the store, {len(column)} rows in the table"
        raise InputFileError(ERR_STAY_MISMATCH.format(path=path, csv=cohort_csv, detail=detail))
    differ = np.flatnonzero(column != stored)
    if len(differ):
        i = int(differ[0])
        detail = f"row {i}: store {int(stored[i])}, table {int(column[i])}"
        raise InputFileError(ERR_STAY_MISMATCH.format(path=path, csv=cohort_csv, detail=detail))


def store_fingerprint(path: Path) -> str | None:
    """The ``fingerprint`` root attribute of a store, or None when there is no readable store."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("fingerprint")
    except OSError:
        return None
    return None if value is None else str(value)


def embedding_attrs(path: Path) -> dict[str, dict[str, Any]]:
    """``encoder_id -> attrs`` of the embeddings already in a store."""
    with h5py.File(path, "r") as f:
        group = f.get("cxr/embeddings")
        if group is None:
            return {}
        return {name: {k: _plain(v) for k, v in group[name].attrs.items()} for name in group}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


SAMPLED_BLOCKS = 16  # evenly spaced blocks read from each large event table, first and last included
SAMPLED_BLOCK_BYTES = 1 << 16


def inputs_fingerprint(files: list[Path], config_payload: dict[str, Any]) -> str:
    """prep's reuse key: the input tables' contents and the data-relevant config.

    The small hosp/icu tables (patients, admissions, icustays, diagnoses_icd, d_labitems, the CXR metadata:
    tens of MB gzipped at MIMIC-IV scale) are hashed in full, so any edit to them — a flipped death keeps
    a file's size — rebuilds. The large event tables (``*events``: chartevents alone is ~3 GB gzipped, ~4 s
    of sha256 at the 0.76 GB/s measured here on every prep call) are keyed on size, ``mtime_ns`` and
    :data:`SAMPLED_BLOCKS` blocks of 64 KiB spread over the file. The trade-off: an edit to an event table
    that keeps its size, falls between the sampled blocks *and* is followed by restoring the old mtime goes
    unnoticed; any ordinary rewrite changes the mtime and rebuilds — and so does a plain copy of the tree
    (a needless rebuild, never a stale reuse)."""
    h = hashlib.sha256()
    for file in sorted(Path(p) for p in files):
        h.update(f"{file.parent.name}/{file.name}\t{_table_key(file)}\n".encode())
    h.update(json.dumps(config_payload, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _table_key(file: Path) -> str:
    stat = file.stat()
    if not file.name.split(".")[0].endswith("events"):
        return f"{stat.st_size}\t{file_digest(file)}"
    h = hashlib.sha256()
    last = max(0, stat.st_size - SAMPLED_BLOCK_BYTES)
    with open(file, "rb") as f:
        for offset in sorted({last * i // (SAMPLED_BLOCKS - 1) for i in range(SAMPLED_BLOCKS)}):
            f.seek(offset)
            h.update(f.read(SAMPLED_BLOCK_BYTES))
    return f"{stat.st_size}\t{stat.st_mtime_ns}\t{h.hexdigest()[:DIGEST_LENGTH]}"


def root_attrs(source_label: str, config_json: str, fingerprint: str) -> dict[str, Any]:
    return {
        "mmfair_version": mmfair.__version__,
        "schema_version": SCHEMA_VERSION,
        "source": source_label,
        "config": config_json,
        "fingerprint": fingerprint,
    }
