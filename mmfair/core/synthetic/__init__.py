"""The embedded synthetic source: a MIMIC-IV + MIMIC-CXR-JPG-shaped tree with planted, known truth.

``generate_source`` writes the same layout, file names, column order and value formats as the real
downloads (``reference/mimic_schema.md``), so prep reads it with the code it uses for real data, plus a
``ground_truth/`` folder holding what was planted: per-stay latents, the oracle probability of every
label for each modality subset, the CXR acquisition probabilities and the switches used (DESIGN §4).
The generating model is described in the private modules: ``_model`` (latents and labels),
``_population`` (people, admissions, stays, codes), ``_timeseries`` (vitals and labs), ``_studies`` and
``_images`` (films), ``_oracle`` (best achievable predictions), ``_volume`` (with ``chart_volume="mimic"``,
MIMIC's rows per stay of itemids prep does not read, written a chunk of stays at a time).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from mmfair.core.config import SyntheticConfig
from mmfair.core.synthetic import _model as model
from mmfair.core.synthetic import _vocab as v
from mmfair.core.synthetic._images import RACE_SOFT_TISSUE, render_many
from mmfair.core.synthetic._oracle import MODALITY_SUBSETS, oracle_probabilities
from mmfair.core.synthetic._population import build_population
from mmfair.core.synthetic._studies import GROUP_ACQUISITION, images_and_tables, plan_studies, with_demographics
from mmfair.core.synthetic._timeseries import FIRST_LABEVENT_ID, SPECIMEN_ID_BASE, build_events
from mmfair.core.synthetic import _volume as volume
from mmfair.core.synthetic._writer import DATE, NULLABLE_INT, ONE_DECIMAL, TableWriter, write_empty, write_table
from mmfair.core.errors import ConfigError
from mmfair.core.io import remove_stale_temporaries

__all__ = ["generate_source", "SyntheticSource", "GENERATOR_VERSION"]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]

# Bump when the output for a given config changes, so finished trees are regenerated. Version 2 draws the
# events a chunk of EVENT_CHUNK_STAYS stays at a time (bounded memory); a population of at most one chunk
# (every default and test size) has version 1's bytes.
GENERATOR_VERSION = 2
EVENT_CHUNK_STAYS = 8_000   # ICU stays whose events are drawn together: ~0.7 GB of compact rows
EVENTS_STREAM = 7           # SeedSequence spawn key of event chunks after the first (0-5 compact, 6 volume)
CXR_VERSION = "2.0.0"
_OUR_ENTRIES = {"mimiciv", "mimic-cxr-jpg", "ground_truth"}
_PARALLEL_MIN_IMAGES = 400


@dataclass(frozen=True)
class SyntheticSource:
    """Where a generated tree lives."""

    mimic_root: Path    # <out>/mimiciv/<version>, holding hosp/ and icu/
    cxr_root: Path      # <out>/mimic-cxr-jpg/2.0.0
    ground_truth: Path  # <out>/ground_truth

    @classmethod
    def at(cls, out_dir: Path, mimic_version: str) -> "SyntheticSource":
        out_dir = Path(out_dir)
        return cls(out_dir / "mimiciv" / mimic_version, out_dir / "mimic-cxr-jpg" / CXR_VERSION,
                   out_dir / "ground_truth")


# options added after trees existed: left out of the identity at their default, so those trees are reused
_LATER_DEFAULTS = {"chart_volume": "compact", "age_sex_latents": True, "image_demographic_signal": False}


def _identity(config: SyntheticConfig) -> dict:
    settings = config.model_dump(mode="json")
    for key, default in _LATER_DEFAULTS.items():
        if settings.get(key) == default:
            settings.pop(key)
    return {"generator_version": GENERATOR_VERSION, "config": settings}


def _is_finished(out_dir: Path, config: SyntheticConfig) -> bool:
    truth = out_dir / "ground_truth"
    if not (truth / "DONE").is_file() or not (truth / "config.json").is_file():
        return False
    try:
        return json.loads((truth / "config.json").read_text()) == _identity(config)
    except (OSError, json.JSONDecodeError):
        return False


def generate_source(config: SyntheticConfig, out_dir: Path, progress: Progress | None = None) -> SyntheticSource:
    """Generate (or reuse) the synthetic MIMIC-IV + MIMIC-CXR-JPG tree with planted ground truth.

    Parameters
    ----------
    config
        The synthetic source's settings: size, seed, MIMIC-IV version, image sizes, CXR availability,
        number of non-cohort CXR subjects and the on/off switches of the planted group effects.
    out_dir
        Folder to hold ``mimiciv/<version>/``, ``mimic-cxr-jpg/2.0.0/`` and ``ground_truth/``. A tree
        already finished there from the identical config (``ground_truth/config.json`` equal and
        ``ground_truth/DONE`` present) is reused as is; anything else our generator left there is replaced.
    progress
        Optional callable ``(description, done, total)`` for a progress bar.

    Returns
    -------
    SyntheticSource
        The three roots of the tree.

    Raises
    ------
    ConfigError
        If ``out_dir`` exists and holds files this generator did not write.

    Notes
    -----
    Deterministic from ``config.seed``: the same config gives byte-identical tables. The tree is built in
    a temporary sibling folder and renamed into place at the end, so an interrupted run never leaves a
    tree that looks finished.
    """
    out_dir = Path(out_dir)
    source = SyntheticSource.at(out_dir, config.mimic_version)
    if _is_finished(out_dir, config):
        log.info("synthetic source in %s is complete for this config; reusing it", out_dir)
        return source
    if out_dir.exists() and any(p.name not in _OUR_ENTRIES for p in out_dir.iterdir()):
        raise ConfigError(
            f"{out_dir}: exists and holds files the synthetic generator did not write; "
            "choose an empty or new folder for the synthetic source"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent)  # .<name>.partial-<pid> of a generator killed before its finally
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    started = time.perf_counter()
    try:
        _generate_into(staging, config, progress)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
            os.replace(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("synthetic source written to %s in %.1f s", out_dir, time.perf_counter() - started)
    return source


def _generate_into(root: Path, config: SyntheticConfig, progress: Progress | None) -> None:
    report = progress or (lambda description, done, total: None)
    src = SyntheticSource.at(root, config.mimic_version)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(6)]
    steps = 5
    timings: dict[str, float] = {}

    t = time.perf_counter()
    report("synthetic: population", 0, steps)
    pop = build_population(config, streams[0])
    timings["population"] = time.perf_counter() - t

    t = time.perf_counter()
    report("synthetic: vitals, labs and MIMIC-IV tables", 1, steps)
    _write_mimic(src.mimic_root, pop, config, streams[1])
    timings["events_and_mimic_tables"] = time.perf_counter() - t

    t = time.perf_counter()
    report("synthetic: planning chest X-rays", 2, steps)
    studies, p_acquire, planted = plan_studies(config, pop.stays, pop.encoder_subjects, streams[2])
    if config.image_demographic_signal:
        studies = with_demographics(studies, pop.stays, pop.encoder_subjects)
    images, chexpert, split = images_and_tables(config, studies, streams[3])
    _write_cxr_tables(src.cxr_root, images, chexpert, split)
    timings["plan_cxr"] = time.perf_counter() - t

    t = time.perf_counter()
    _render_images(src.cxr_root, images, report)
    timings["draw_cxr"] = time.perf_counter() - t

    t = time.perf_counter()
    report("synthetic: ground truth", 4, steps)
    _write_ground_truth(src.ground_truth, config, pop, studies, images, p_acquire, planted, streams[4])
    timings["ground_truth"] = time.perf_counter() - t
    log.info("synthetic source timings (s): %s", {k: round(x, 2) for k, x in timings.items()})
    (src.ground_truth / "DONE").write_text(json.dumps({"seconds": timings}, sort_keys=True) + "\n")
    report("synthetic: done", steps, steps)


def _write_mimic(mimic_root: Path, pop, config: SyntheticConfig, first_events_rng: np.random.Generator) -> None:
    hosp, icu = mimic_root / "hosp", mimic_root / "icu"
    mimic_volume = config.chart_volume == "mimic"
    write_table(hosp / "patients.csv.gz", pop.patients, v.PATIENTS_COLUMNS, {"dod": DATE})
    write_table(hosp / "admissions.csv.gz", pop.admissions, v.ADMISSIONS_COLUMNS)
    write_table(hosp / "diagnoses_icd.csv.gz", pop.diagnoses, v.DIAGNOSES_COLUMNS)
    _write_events(icu / "chartevents.csv.gz", hosp / "labevents.csv.gz", icu / "outputevents.csv.gz", pop.stays,
                  config, first_events_rng)
    d_lab = pd.DataFrame(v.D_LABITEMS_ROWS + (volume.d_labitems_rows() if mimic_volume else []),
                         columns=v.D_LABITEMS_COLUMNS)
    write_table(hosp / "d_labitems.csv.gz", d_lab, v.D_LABITEMS_COLUMNS)
    d_icd = pd.DataFrame(
        sorted({(c, int(ver)) for c, ver in zip(pop.diagnoses["icd_code"], pop.diagnoses["icd_version"])}),
        columns=["icd_code", "icd_version"],
    )
    d_icd["long_title"] = ""
    write_table(hosp / "d_icd_diagnoses.csv.gz", d_icd, ["icd_code", "icd_version", "long_title"])
    write_table(hosp / "transfers.csv.gz", _transfers(pop), v.TRANSFERS_COLUMNS)
    for name in v.EMPTY_HOSP_TABLES:
        write_empty(hosp / f"{name}.csv.gz", ["subject_id"] if name not in ("provider", "d_hcpcs", "d_icd_procedures")
                    else ["code"])
    write_table(icu / "icustays.csv.gz", pop.icustays, v.ICUSTAYS_COLUMNS)
    d_items = pd.DataFrame(v.D_ITEMS_ROWS + (volume.d_items_rows() if mimic_volume else []), columns=v.D_ITEMS_COLUMNS)
    for col in ("lownormalvalue", "highnormalvalue"):
        d_items[col] = d_items[col].astype(float)
    write_table(icu / "d_items.csv.gz", d_items, v.D_ITEMS_COLUMNS)
    for name in v.EMPTY_ICU_TABLES:
        write_empty(icu / f"{name}.csv.gz", ["subject_id"] if name != "caregiver" else ["caregiver_id"])


def _write_events(chart_path: Path, lab_path: Path, output_path: Path, stays: pd.DataFrame, config: SyntheticConfig,
                  first_rng: np.random.Generator) -> None:
    """chartevents, labevents and outputevents, drawn and appended a chunk of stays at a time.

    Only one chunk's events (``EVENT_CHUNK_STAYS`` stays, about 0.09 MB each) are in memory at once; with
    ``chart_volume="mimic"`` each is further split into the volume's chunks, with MIMIC's extra rows
    interleaved per stay. The first chunk draws from ``first_rng`` (the stream the whole table used before
    chunking, so a population of at most one chunk gives generator version 1's bytes); chunk ``i > 0`` from
    ``SeedSequence(seed, spawn_key=(EVENTS_STREAM, i))``. Lab event and specimen ids count on over chunks.
    """
    started = time.perf_counter()
    mimic_volume = config.chart_volume == "mimic"
    stays_per_chunk, volume_chunk = EVENT_CHUNK_STAYS, volume.STAYS_PER_CHUNK
    if mimic_volume and stays_per_chunk % volume_chunk:
        raise ValueError("EVENT_CHUNK_STAYS must be a multiple of the volume's STAYS_PER_CHUNK")
    next_labevent_id, specimen_base = FIRST_LABEVENT_ID, SPECIMEN_ID_BASE
    n_chart = n_labs = 0
    with TableWriter(chart_path, v.CHARTEVENTS_COLUMNS) as chart_out, \
            TableWriter(lab_path, v.LABEVENTS_COLUMNS, {"hadm_id": NULLABLE_INT}) as lab_out, \
            TableWriter(output_path, v.OUTPUTEVENTS_COLUMNS) as output_out:
        for index, first in enumerate(range(0, len(stays), stays_per_chunk)):
            rng = first_rng if index == 0 else np.random.default_rng(
                np.random.SeedSequence(config.seed, spawn_key=(EVENTS_STREAM, index)))
            part = stays.iloc[first:first + stays_per_chunk].reset_index(drop=True)
            chart, labs, output = build_events(part, config.spo2_bias, rng, next_labevent_id, specimen_base)
            if len(labs["specimen_id"]):
                specimen_base = int(labs["specimen_id"].max())
            pieces = (volume.chunks(part, chart, labs, config.seed, stays_per_chunk=volume_chunk,
                                    first_chunk_index=first // volume_chunk) if mimic_volume else [volume.Chunk(
                                        chart=chart, labs=labs, n_extra_chart=0, n_extra_labs=0)])
            for piece in pieces:
                n_chart += chart_out.append(piece.chart)
                n_labs += lab_out.append(piece.labs)
                if len(piece.labs["labevent_id"]):
                    next_labevent_id = max(next_labevent_id, int(piece.labs["labevent_id"].max()) + 1)
            output_out.append(output)
            del chart, labs, output, pieces
    seconds = time.perf_counter() - started
    log.info("chartevents %d rows, labevents %d rows (%s volume) in %.1f s (%.0f rows/s)", n_chart, n_labs,
             config.chart_volume, seconds, (n_chart + n_labs) / max(seconds, 1e-9))


def _transfers(pop) -> pd.DataFrame:
    """ICU transfer rows (one per stay) so the hosp/transfers file is not empty."""
    st = pop.icustays
    return pd.DataFrame({
        "subject_id": st["subject_id"].to_numpy(), "hadm_id": st["hadm_id"].to_numpy(),
        "transfer_id": 30_000_000 + np.arange(len(st)) * 7 + 3, "eventtype": np.full(len(st), "admit", object),
        "careunit": st["first_careunit"].to_numpy(), "intime": st["intime"].to_numpy(),
        "outtime": st["outtime"].to_numpy(),
    })


def _image_path(cxr_root: Path, subject_id: int, study_id: int, dicom_id: str) -> Path:
    sid = str(subject_id)
    return cxr_root / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{study_id}" / f"{dicom_id}.jpg"


def _write_cxr_tables(cxr_root: Path, images: pd.DataFrame, chexpert: pd.DataFrame, split: pd.DataFrame) -> None:
    write_table(cxr_root / "mimic-cxr-2.0.0-metadata.csv.gz", images, v.CXR_METADATA_COLUMNS)
    kinds = {name: ONE_DECIMAL for name in v.CHEXPERT_LABELS}
    columns = ["subject_id", "study_id", *v.CHEXPERT_LABELS]
    write_table(cxr_root / "mimic-cxr-2.0.0-chexpert.csv.gz", chexpert, columns, kinds)
    write_table(cxr_root / "mimic-cxr-2.0.0-negbio.csv.gz", chexpert, columns, kinds)
    write_table(cxr_root / "mimic-cxr-2.0.0-split.csv.gz", split, v.CXR_SPLIT_COLUMNS)
    paths = [str(_image_path(Path("."), s, st, d)).lstrip("./") for s, st, d in
             zip(images["subject_id"], images["study_id"], images["dicom_id"])]
    (cxr_root / "IMAGE_FILENAMES").write_text("\n".join(paths) + ("\n" if paths else ""))


def _render_images(cxr_root: Path, images: pd.DataFrame, report: Progress) -> None:
    tasks = [(str(_image_path(cxr_root, s, st, d)), p, seed) for s, st, d, p, seed in
             zip(images["subject_id"], images["study_id"], images["dicom_id"], images["params"], images["seed"])]
    total = len(tasks)
    report("synthetic: drawing chest X-rays", 0, total)
    chunk = 64
    chunks = [tasks[i:i + chunk] for i in range(0, total, chunk)]
    workers = min(4, os.cpu_count() or 1)
    done = 0
    if total < _PARALLEL_MIN_IMAGES or workers < 2:
        for part in chunks:
            render_many(part)
            done += len(part)
            report("synthetic: drawing chest X-rays", done, total)
        return
    # fork where the OS has it: drawing is GIL-bound numpy work, and spawn would need an importable
    # __main__ in every caller's script. The children use only numpy and Pillow (no OpenMP, no torch), so
    # threads a parent may hold do not matter to them. Threads elsewhere.
    if "fork" in get_all_start_methods():
        from mmfair.core.data.pools import process_pool  # workers that die with us, even on SIGKILL

        executor = process_pool(workers, mp_context=get_context("fork"))
    else:
        executor = ThreadPoolExecutor(max_workers=workers)
    with executor as pool:
        for part, _ in zip(chunks, pool.map(render_many, chunks)):
            done += len(part)
            report("synthetic: drawing chest X-rays", done, total)


def _expected_pairing(stays: pd.DataFrame, images: pd.DataFrame, window_hours: int = 48) -> pd.DataFrame:
    """The film prep should pair with each cohort stay: frontal, inside the window, latest, ties by dicom_id."""
    frontal = images[images["ViewPosition"].isin(["AP", "PA"])][["subject_id", "study_id", "dicom_id", "time"]]
    frontal = frontal.assign(time=pd.to_datetime(frontal["time"].to_numpy().astype("datetime64[s]")))
    cohort = stays.loc[stays["cohort"] == 1, ["stay_id", "subject_id", "intime"]]
    m = cohort.merge(frontal, on="subject_id")
    hours = (m["time"] - m["intime"]).dt.total_seconds() / 3600.0
    m = m[(hours >= 0) & (hours < window_hours)].assign(cxr_time_hours=hours)
    m = m.sort_values(["stay_id", "time", "dicom_id"]).groupby("stay_id").tail(1)
    return m.set_index("stay_id")[["study_id", "dicom_id", "cxr_time_hours"]]


def _write_ground_truth(truth: Path, config: SyntheticConfig, pop, studies: pd.DataFrame, images: pd.DataFrame,
                        p_acquire: np.ndarray, planted: np.ndarray, rng: np.random.Generator) -> None:
    from sklearn.metrics import roc_auc_score

    truth.mkdir(parents=True, exist_ok=True)
    st = pop.stays
    latents = st[[f"latent_{n}" for n in model.LATENTS]].to_numpy()
    oracle = oracle_probabilities(latents, pop.latent_mean, st["device"].to_numpy(), pop.intercepts,
                                  st["label_miss_rate"].to_numpy(), st["label_false_rate"].to_numpy(), rng)
    pairing = _expected_pairing(st, images)
    out = st.drop(columns=["admittime", "dischtime", "deathtime", "mortality_true_draw"]).copy()
    out["cxr_acquisition_prob"] = p_acquire
    out["has_planted_cxr"] = planted.astype(np.int64)
    out["expected_cxr_study_id"] = out["stay_id"].map(pairing["study_id"]).astype("Int64")
    out["expected_cxr_dicom_id"] = out["stay_id"].map(pairing["dicom_id"])
    out["has_cxr"] = out["expected_cxr_dicom_id"].notna().astype(np.int64)
    out = pd.concat([out.reset_index(drop=True), oracle], axis=1)
    out.to_csv(truth / "stays.csv", index=False, float_format="%.6g", date_format="%Y-%m-%d %H:%M:%S")

    study_truth = studies.drop(columns=["blobs", "lesion", "views", "encoder_row"]).copy()
    stay_row = study_truth.pop("stay_row").to_numpy()
    study_truth.insert(1, "stay_id", pd.array(np.where(stay_row >= 0, st["stay_id"].to_numpy()[stay_row], 0),
                                              dtype="Int64"))
    study_truth.loc[stay_row < 0, "stay_id"] = pd.NA
    study_truth["time"] = pd.to_datetime(study_truth["time"].to_numpy().astype("datetime64[ms]"))
    study_truth.to_csv(truth / "cxr_studies.csv", index=False, float_format="%.6g")

    switches = {
        "group_base_rates": {"on": config.group_base_rates, "latent_mean_shifts": model.GROUP_LATENT_SHIFTS},
        "group_missingness": {"on": config.group_missingness, "relative_acquisition": GROUP_ACQUISITION},
        "spo2_bias": {"on": config.spo2_bias, "group": "BLACK", "overread_points": [2.0, 4.5],
                      "rule": "clip(2 + 0.2 * (97 - SaO2), 2, 4.5)"},
        "group_label_noise": {"on": config.group_label_noise, "applies_to": "diagnosis codes (phenotypes)",
                              "miss_rate_false_code_rate": {g: list(r) for g, r in model.LABEL_NOISE_ON.items()}},
        "year_acquisition": {"on": config.year_acquisition, "cxr_year_groups": list(v.CXR_YEAR_GROUPS)},
        "cxr_availability": config.cxr_availability,
        "label_models": {k: {"target_prevalence": p, "weights": w, "intercept": pop.intercepts[k]}
                         for k, (p, w) in model.LABEL_MODELS.items()},
        "modality_latents": {k: list(x) for k, x in MODALITY_SUBSETS.items()},
    }
    if not config.age_sex_latents:  # recorded only when not the default, so a default tree's file is unchanged
        switches["age_sex_latents"] = {"on": False}
    if config.image_demographic_signal:
        switches["image_demographic_signal"] = {"on": True, "race_soft_tissue": RACE_SOFT_TISSUE,
                                                "marks": "breast shadows (F), bone density falling with age"}
    (truth / "switches.json").write_text(json.dumps(switches, indent=2, sort_keys=True) + "\n")

    cohort = out[out["cohort"] == 1]
    aurocs: dict[str, dict[str, float | None]] = {}
    for label in model.LABEL_MODELS:
        y = cohort["mortality" if label == model.MORTALITY else f"pheno_{label}"].to_numpy()
        aurocs[label] = {
            subset: (float(roc_auc_score(y, cohort[f"oracle_{label}__{subset}"])) if 0 < y.sum() < len(y) else None)
            for subset in MODALITY_SUBSETS
        }
    summary = {"n_cohort_stays": int(len(cohort)), "mortality_rate": float(cohort["mortality"].mean()),
               "share_with_cxr": float(cohort["has_cxr"].mean()), "oracle_auroc": aurocs}
    (truth / "oracle_auroc.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (truth / "config.json").write_text(json.dumps(_identity(config), indent=2, sort_keys=True) + "\n")
