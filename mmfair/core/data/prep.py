"""``prep``: a MIMIC-shaped source → ``data/cohort.csv``, ``features.h5``, ``attrition.csv``,
``variable_coverage.csv``, ``table1.csv`` and ``prep.json`` (DESIGN §3.1–3.2, §6, §7).

``prep.json`` also holds the per-phenotype prevalence among ICD-9- and ICD-10-coded admissions and
the phenotypes whose two prevalences disagree wildly (``phenotypes.version_disagreements``; logged
as a warning). ``table1.csv`` is described in :mod:`mmfair.core.data.table1`; a reused workspace
made before it existed gets it written from ``cohort.csv``.

Stages (each timed in ``PrepResult.stage_seconds``): ``cohort`` (stays, filters, labels, folds,
pairing), ``timeseries`` (hourly binning), ``images`` (decoding the paired images), ``encoder`` (the
CXR encoder on non-cohort images, then embedding the cohort's images) and ``write``.

Every output is written under a temporary name and renamed into place only once all of them are
complete, ``features.h5`` last. A later run whose inputs (the small tables' contents, the event tables'
size, mtime and sampled blocks: :func:`~mmfair.core.data.store.inputs_fingerprint`) and data options give
the same fingerprint reuses the outputs; the encoder options are not part of the fingerprint, so the
encoder stage can be rerun alone on an existing store (it adds ``/cxr/embeddings/<encoder_id>``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np
import pandas as pd

from mmfair.core.config import PrepConfig, config_hash
from mmfair.core.data import cohort as cohort_mod
from mmfair.core.data.images import load_images
from mmfair.core.data.mimic import (
    CHEXPERT_FINDINGS,
    CXR_METADATA,
    MimicSource,
    connect,
    detect_version,
    locate_source,
)
from mmfair.core.data.store import (
    add_embeddings,
    embedding_attrs,
    inputs_fingerprint,
    open_store,
    root_attrs,
    store_fingerprint,
    write_store,
)
from mmfair.core.data.phenotypes import version_disagreements
from mmfair.core.data.table1 import build_table1
from mmfair.core.data.timeseries import bin_hourly
from mmfair.core.data.variables import load_variable_map
from mmfair.core.errors import ConfigError, InputFileError
from mmfair.core.io import remove_stale_temporaries
from mmfair.core.workspace import Workspace

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

ATTRITION_CSV = "attrition.csv"
COVERAGE_CSV = "variable_coverage.csv"
TABLE1_CSV = "table1.csv"
PREP_JSON = "prep.json"
ENCODER_KEY_ATTR = "prep_encoder_key"
DUCKDB_SPILL_DIR = ".prep-duckdb-spill"
SYNTHETIC_MARKER = Path("ground_truth") / "switches.json"

# options that change neither the cohort nor the features (excluded from the store fingerprint)
ENCODER_FIELDS = frozenset({"cxr_encoder", "cxr_weights", "encoder_image_size", "encoder_time_budget_s",
                            "encoder_max_epochs", "skip_encoder", "encoder_max_images", "encoder_max_steps",
                            "encoder_threads", "cxr_pretraining"})
MACHINE_FIELDS = frozenset({"workers", "memory_limit", "duckdb_threads", "mimic_root", "cxr_root"})

ERR_NO_MIMIC_ROOT = "prep needs mimic_root: the folder holding hosp/ and icu/ (e.g. .../mimiciv/2.2)"
ERR_TEMPORAL_YEARS = ("temporal_train_years={train} and temporal_test_years={test}: each must be (first, last) "
                      "with first <= last, and the two periods must not overlap")
ERR_WINDOW = ("min_stay_hours={stay} is shorter than window_hours={window}: trailing empty hours would leak "
              "length of stay and death into the features")


@dataclass
class PrepResult:
    """What ``run_prep`` produced (or found already produced)."""

    n_stays: int
    n_with_cxr: int
    attrition: pd.DataFrame
    encoder: dict | None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    reused: bool = False
    source: str = ""
    fingerprint: str = ""


def run_prep(config: PrepConfig, workspace: Workspace, progress: Progress | None = None) -> PrepResult:
    """Build (or reuse) the workspace's ``data/`` from a MIMIC-shaped source.

    Parameters
    ----------
    config : PrepConfig
        ``mimic_root`` (folder holding ``hosp/`` and ``icu/``) and optional ``cxr_root``; cohort,
        window, variable-map and encoder options.
    workspace : Workspace
        Outputs go to ``workspace.data``.
    progress : callable, optional
        ``(description, done, total)`` called as stages advance.

    Returns
    -------
    PrepResult

    Raises
    ------
    ConfigError
        Inconsistent options (no ``mimic_root``, a minimum stay shorter than the window).
    InputFileError
        A missing file or column, an unreadable value or image, an empty table.
    """
    _check_config(config)
    remove_stale_temporaries(workspace.data)  # what a prep killed with SIGKILL left half-written
    source = locate_source(config.mimic_root, config.cxr_root)
    if source.cxr_root is None:
        log.warning("no MIMIC-CXR-JPG root given: building an EHR-only cohort (has_cxr is 0 for every stay)")
    variables = load_variable_map(config.variables)
    fingerprint = inputs_fingerprint(_input_files(source, variables), _data_config(config))
    if _outputs_match(workspace, fingerprint):
        log.info("prep: %s already holds outputs with fingerprint %s; reusing them", workspace.data, fingerprint)
        return _reuse(config, workspace, source, fingerprint, progress)
    return _build(config, workspace, source, variables, fingerprint, progress)


def _check_config(config: PrepConfig) -> None:
    if config.mimic_root is None:
        raise ConfigError(ERR_NO_MIMIC_ROOT)
    if config.min_stay_hours < config.window_hours:
        raise ConfigError(ERR_WINDOW.format(stay=config.min_stay_hours, window=config.window_hours))
    (a, b), (c, d) = config.temporal_train_years, config.temporal_test_years
    if a > b or c > d or not (b < c or d < a):
        raise ConfigError(ERR_TEMPORAL_YEARS.format(train=config.temporal_train_years, test=config.temporal_test_years))


def _input_files(source: MimicSource, variables) -> list[Path]:
    keys = ["icu/icustays", "hosp/admissions", "hosp/patients", "hosp/diagnoses_icd"]
    tables = {src.table for var in variables.variables for src in var.sources}
    if "chartevents" in tables:
        keys.append("icu/chartevents")
    if "labevents" in tables:
        keys += ["hosp/labevents", "hosp/d_labitems"]
    if "outputevents" in tables:
        keys.append("icu/outputevents")
    files = [source.table(k) for k in keys]
    if source.cxr_root is not None:
        files.append(source.cxr_table(CXR_METADATA, "metadata"))
    return files


def _data_config(config: PrepConfig) -> dict[str, Any]:
    payload = config.model_dump(mode="json")
    for key in ENCODER_FIELDS | MACHINE_FIELDS:
        payload.pop(key, None)
    payload["has_cxr_root"] = config.cxr_root is not None
    return payload


def _encoder_key(config: PrepConfig) -> str:
    payload = {k: v for k, v in config.model_dump(mode="json").items() if k in ENCODER_FIELDS - {"skip_encoder"}}
    return config_hash(payload)


def _outputs_match(workspace: Workspace, fingerprint: str) -> bool:
    data = workspace.data
    needed = [workspace.cohort_csv, data / ATTRITION_CSV, data / COVERAGE_CSV, data / PREP_JSON]
    if not all(p.is_file() for p in needed) or store_fingerprint(workspace.features_h5) != fingerprint:
        return False
    try:
        open_store(workspace.features_h5, workspace.cohort_csv).close()
    except InputFileError as exc:
        log.warning("prep: existing outputs do not belong together (%s); rebuilding", exc)
        return False
    return True


@contextlib.contextmanager
def _duckdb(config: PrepConfig, workspace: Workspace) -> Iterator[Any]:
    """A DuckDB connection whose spill folder is removed afterwards, however the block ends."""
    con = connect(config.memory_limit, config.duckdb_threads, workspace.data / DUCKDB_SPILL_DIR)
    try:
        yield con
    finally:
        con.close()
        shutil.rmtree(workspace.data / DUCKDB_SPILL_DIR, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- build

def _build(config: PrepConfig, workspace: Workspace, source: MimicSource, variables, fingerprint: str,
           progress: Progress | None) -> PrepResult:
    seconds: dict[str, float] = {}
    with _duckdb(config, workspace) as con:
        clock = time.perf_counter()
        _tick(progress, "cohort", 0, 5)
        cohort, attrition, pheno_columns, version, notes = _cohort_stage(con, source, config)
        prevalence = notes.pop("prevalence")
        seconds["cohort"] = time.perf_counter() - clock

        clock = time.perf_counter()
        _tick(progress, "hourly time series", 1, 5)
        hourly = bin_hourly(con, source, cohort, variables, config.window_hours, progress=None)
        seconds["timeseries"] = time.perf_counter() - clock

        clock = time.perf_counter()
        _tick(progress, "decoding paired images", 2, 5)
        images, cxr_row = _paired_images(source, cohort, config)
        seconds["images"] = time.perf_counter() - clock

        source_label = _source_label(config, source, version)
        staged = _Staged(workspace.data)
        try:
            clock = time.perf_counter()
            _tick(progress, "writing", 3, 5)
            table = _cohort_table(cohort, pheno_columns)
            staged.write_csv(workspace.cohort_csv, table)
            staged.write_csv(workspace.data / TABLE1_CSV, build_table1(table))
            staged.write_csv(workspace.data / ATTRITION_CSV, attrition)
            staged.write_csv(workspace.data / COVERAGE_CSV, hourly.coverage)
            store_tmp = staged.path_for(workspace.features_h5)
            write_store(store_tmp, stay_ids=cohort["stay_id"].to_numpy(dtype=np.int64), values=hourly.values,
                        feature_names=variables.names, feature_groups=variables.groups, images=images,
                        cxr_row=cxr_row, attrs=root_attrs(source_label, config.model_dump_json(), fingerprint))
            seconds["write"] = time.perf_counter() - clock

            clock = time.perf_counter()
            _tick(progress, "CXR encoder", 4, 5)
            encoder = _encoder_stage(con, source, cohort["subject_id"].to_numpy(), images, store_tmp, config,
                                     progress)
            seconds["encoder"] = time.perf_counter() - clock

            summary = _prep_summary(config, source_label, version, fingerprint, cohort, attrition,
                                    encoder, seconds, prevalence, variables)
            summary.update(notes, labs=hourly.labs)
            staged.write_json(workspace.data / PREP_JSON, summary)
            staged.commit(last=workspace.features_h5)
        except BaseException:
            staged.discard()
            raise
    _tick(progress, "done", 5, 5)
    log.info("prep: %d stays, %d with a paired CXR; stage seconds %s", len(cohort), int(cohort["has_cxr"].sum()),
             {k: round(v, 2) for k, v in seconds.items()})
    from mmfair.core.data.sanity import warn_outliers  # the real-data sanity card (issue 17)

    warn_outliers(workspace)
    return PrepResult(n_stays=len(cohort), n_with_cxr=int(cohort["has_cxr"].sum()), attrition=attrition,
                      encoder=encoder, stage_seconds=seconds, reused=False, source=source_label,
                      fingerprint=fingerprint)


def _source_label(config: PrepConfig, source: MimicSource, version: str) -> str:
    """``config.source_label``, else ``synthetic`` for a tree the generator wrote (it leaves
    ``ground_truth/switches.json`` beside ``mimiciv/``), else ``mimic-iv-<version>``."""
    if config.source_label:
        return config.source_label
    if (source.root.parent.parent / SYNTHETIC_MARKER).is_file():
        return "synthetic"
    return f"mimic-iv-{version}"


def _tick(progress: Progress | None, description: str, done: int, total: int) -> None:
    if progress is not None:
        progress(description, done, total)


def _cohort_stage(con, source: MimicSource, config: PrepConfig):
    stays = cohort_mod.load_stays(con, source)
    version = detect_version(source, stays, config.mimic_version)
    cohort, attrition, problems = cohort_mod.apply_filters(stays, config)
    cohort = cohort_mod.add_demographics(cohort, config)
    cohort = cohort_mod.add_outcome_labels(cohort, config)
    cohort, pheno_columns, prevalence = cohort_mod.add_phenotypes(con, source, cohort, config.icd10_mode)
    disagreements = version_disagreements(prevalence)
    if disagreements:
        log.warning("phenotype prevalence differs wildly between ICD-9 and ICD-10 coded admissions for %s "
                    "(ICD-10 code lists may be incomplete; see prep.json phenotype_prevalence_by_icd_version)",
                    ", ".join(f"{d['phenotype']} ({d['icd9']:.1%} vs {d['icd10']:.1%})" for d in disagreements))
    cohort["fold"] = cohort_mod.assign_folds(cohort, config.n_folds, config.fold_seed)
    if source.cxr_root is not None:
        pairs = cohort_mod.pair_cxr(con, source, cohort, config.window_hours)
    else:
        pairs = pd.DataFrame(columns=["stay_id", "dicom_id", "study_id", "subject_id", "cxr_time_hours"])
    cohort = cohort_mod.add_cxr_columns(cohort, pairs)
    cohort = cohort.sort_values("stay_id").reset_index(drop=True)
    notes = {"input_problems": problems,
             "temporal_split": cohort_mod.temporal_summary(cohort, config.temporal_train_years,
                                                           config.temporal_test_years, source.cxr_root is not None)}
    return cohort, attrition, pheno_columns, version, {"prevalence": prevalence, **notes}


def _cohort_table(cohort: pd.DataFrame, pheno_columns: list[str]) -> pd.DataFrame:
    """cohort.csv: contract column order, timestamps as text, integers as integers."""
    out = cohort[cohort_mod.cohort_columns(pheno_columns)].copy()
    for column in ("intime", "outtime"):
        out[column] = out[column].dt.strftime("%Y-%m-%d %H:%M:%S")
    for column in ("stay_id", "subject_id", "hadm_id", "fold", "age", "mortality", "mortality_icu",
                   "los_class", "has_cxr", *pheno_columns):
        out[column] = out[column].astype(np.int64)
    return out


def _paired_images(source: MimicSource, cohort: pd.DataFrame, config: PrepConfig) -> tuple[np.ndarray, np.ndarray]:
    has = cohort["has_cxr"].to_numpy() == 1
    cxr_row = np.full(len(cohort), -1, dtype=np.int64)
    cxr_row[has] = np.arange(int(has.sum()))
    paths = [source.image_path(s, st, d) for s, st, d in
             cohort.loc[has, ["subject_id", "cxr_study_id", "cxr_dicom_id"]].itertuples(index=False)]
    images = load_images(paths, config.image_size, workers=config.workers)
    return images, cxr_row


# --------------------------------------------------------------------------------------------- encoder

def _encoder_stage(con, source: MimicSource, cohort_subjects: np.ndarray, cohort_images: np.ndarray,
                   store_path: Path, config: PrepConfig, progress: Progress | None = None) -> dict | None:
    if config.skip_encoder:
        log.info("encoder: skipped (skip_encoder)")
        return None
    if source.cxr_root is None or len(cohort_images) == 0:
        log.info("encoder: skipped (no paired cohort images to embed)")
        return None
    table = cohort_mod.encoder_training_set(con, source, cohort_subjects, config.encoder_max_images,
                                            config.fold_seed)
    paths = [source.image_path(s, st, d) for d, s, st in
             table[["dicom_id", "subject_id", "study_id"]].itertuples(index=False)]
    log.info("encoder: %d non-cohort frontal images from %d subjects", len(paths), table["subject_id"].nunique())
    train_images = load_images(paths, config.encoder_image_size, workers=config.workers)
    from mmfair.core.data.cxr_encoder import fit_and_embed

    result = fit_and_embed(
        train_images,
        table[list(CHEXPERT_FINDINGS)].to_numpy(dtype=np.float32),
        table["subject_id"].to_numpy(dtype=np.int64),
        list(CHEXPERT_FINDINGS),
        cohort_images,
        config,
        progress=progress,
    )
    attrs = dict(result.attrs)
    attrs[ENCODER_KEY_ATTR] = _encoder_key(config)
    add_embeddings(store_path, result.encoder_id, result.embeddings, attrs, weights=getattr(result, "backbone_state", None))
    return _encoder_summary(result.encoder_id, attrs, dict(result.heldout_auroc),
                            getattr(result, "random_init", None))


def _encoder_summary(encoder_id: str, attrs: dict, heldout_auroc: dict, random_init: bool | None) -> dict:
    if random_init is None:
        random_init = any(str(v) == "random-init" for v in attrs.values())
    # the encoder card (what its weights saw before prep) travels with the summary so a report can carry it
    card = {k: attrs[k] for k in ("pretraining_data", "pretraining_mimic_cxr", "provenance_warning") if k in attrs}
    summary = {"encoder_id": encoder_id, "random_init": bool(random_init),
               "heldout_auroc": {k: _finite_or_none(v) for k, v in heldout_auroc.items()}}
    return {**summary, "card": card} if card else summary


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


# ----------------------------------------------------------------------------------------------- reuse

def _reuse(config: PrepConfig, workspace: Workspace, source: MimicSource, fingerprint: str,
           progress: Progress | None) -> PrepResult:
    summary = json.loads((workspace.data / PREP_JSON).read_text())
    attrition = pd.read_csv(workspace.data / ATTRITION_CSV)
    seconds: dict[str, float] = {}
    if not (workspace.data / TABLE1_CSV).is_file():     # outputs of an mmfair that wrote no table1.csv
        staged = _Staged(workspace.data)
        cohort = pd.read_csv(workspace.cohort_csv, dtype={"cxr_dicom_id": str}, keep_default_na=False)
        staged.write_csv(workspace.data / TABLE1_CSV, build_table1(cohort))
        staged.commit(last=workspace.data / TABLE1_CSV)
    encoder = summary.get("encoder")
    if not config.skip_encoder and not _has_matching_embeddings(workspace.features_h5, config):
        clock = time.perf_counter()
        _tick(progress, "CXR encoder", 0, 1)
        encoder = _rerun_encoder(config, workspace, source, progress) or encoder
        seconds["encoder"] = time.perf_counter() - clock
        summary["encoder"] = encoder
        summary["stage_seconds"] = {**summary.get("stage_seconds", {}), **seconds}
        staged = _Staged(workspace.data)
        staged.write_json(workspace.data / PREP_JSON, summary)
        staged.commit(last=workspace.data / PREP_JSON)
    return PrepResult(n_stays=int(summary["n_stays"]), n_with_cxr=int(summary["n_with_cxr"]), attrition=attrition,
                      encoder=encoder, stage_seconds=seconds, reused=True, source=summary.get("source", ""),
                      fingerprint=fingerprint)


def _has_matching_embeddings(store: Path, config: PrepConfig) -> bool:
    key = _encoder_key(config)
    return any(str(a.get(ENCODER_KEY_ATTR)) == key for a in embedding_attrs(store).values())


def _rerun_encoder(config: PrepConfig, workspace: Workspace, source: MimicSource,
                   progress: Progress | None) -> dict | None:
    cohort = pd.read_csv(workspace.cohort_csv, usecols=["subject_id"])
    with h5py.File(workspace.features_h5, "r") as f:
        images = f["cxr/images"][:]
    staged = _Staged(workspace.data)
    tmp = staged.path_for(workspace.features_h5)
    shutil.copyfile(workspace.features_h5, tmp)
    with _duckdb(config, workspace) as con:
        try:
            encoder = _encoder_stage(con, source, cohort["subject_id"].to_numpy(), images, tmp, config, progress)
            staged.commit(last=workspace.features_h5)
        except BaseException:
            staged.discard()
            raise
    return encoder


# ------------------------------------------------------------------------------------------- prep.json

def _prep_summary(config: PrepConfig, source_label: str, version: str, fingerprint: str, cohort: pd.DataFrame,
                  attrition: pd.DataFrame, encoder: dict | None, seconds: dict, prevalence: dict,
                  variables) -> dict:
    return {
        "source": source_label,
        "mimic_version": version,
        "fingerprint": fingerprint,
        "config": json.loads(config.model_dump_json()),
        "fold_seed": config.fold_seed,
        "n_folds": config.n_folds,
        "icd10_mode": config.icd10_mode,
        "n_stays": int(len(cohort)),
        "n_subjects": int(cohort["subject_id"].nunique()),
        "n_with_cxr": int(cohort["has_cxr"].sum()),
        "mortality_rate": float(cohort["mortality"].mean()),
        "attrition": attrition.to_dict(orient="records"),
        "variables": {"origin": variables.origin, "names": variables.names, "groups": variables.groups},
        "phenotype_prevalence_by_icd_version": prevalence,
        "phenotype_icd_version_disagreements": version_disagreements(prevalence),
        "encoder": encoder,
        "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


# ------------------------------------------------------------------------------------- staged outputs

class _Staged:
    """Outputs written under temporary names, renamed into place together by :meth:`commit`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pending: dict[Path, Path] = {}

    def path_for(self, final: Path) -> Path:
        tmp = self.folder / f".{Path(final).name}.{os.getpid()}.tmp"
        self.pending[Path(final)] = tmp
        return tmp

    def write_csv(self, final: Path, frame: pd.DataFrame) -> None:
        frame.to_csv(self.path_for(final), index=False)

    def write_json(self, final: Path, obj: Any) -> None:
        self.path_for(final).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_safe) + "\n")

    def commit(self, last: Path) -> None:
        order = sorted(self.pending, key=lambda p: p == Path(last))
        for final in order:
            os.replace(self.pending[final], final)
        self.pending.clear()

    def discard(self) -> None:
        for tmp in self.pending.values():
            tmp.unlink(missing_ok=True)
        self.pending.clear()


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
