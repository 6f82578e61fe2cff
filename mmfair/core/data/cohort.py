"""The ICU cohort of ``cohort.csv`` (DESIGN §3.1): filters with attrition, demographics, labels, folds and
the CXR pairing.

Interpretations of DESIGN written down here:

* Attrition steps, in order, each named by what it tests: all ICU stays; admission and patient records
  found; ICU intime and outtime recorded; ICU outtime not before intime; age ≥ ``min_age``; stay ≥
  ``min_stay_hours`` (``outtime − intime``); admittime and dischtime recorded; admission length > 0
  (``dischtime > admittime``: MIMIC-IV's organ-donor pseudo-admissions). Impossible or empty times are
  counted per file and reason (:data:`INPUT_PROBLEMS`), logged as warnings and listed in ``prep.json``;
  the organ-donor step warns when it removes more than :data:`DONOR_WARN_SHARE` of the stays (and at
  least :data:`DONOR_WARN_MIN` of them): such records are rare in MIMIC-IV, so many suggest swapped times.
* Each table is read into its own DuckDB table before the join, so a value of the wrong type is reported
  against the file it is in.
* Age is ``anchor_age + year(intime) − anchor_year``, capped at 91 (MIMIC's de-identified age), so
  an ``anchor_age`` of 91 stays 91.
* ``temporal_split`` (:func:`temporal_split`): each stay's estimated year is the start of its patient's
  ``anchor_year_group`` + ``year(intime) − anchor_year`` — the earliest year the stay can have happened in
  (the anchor year lies somewhere in the 3-year group, so the true year is up to 2 years later). ``train``
  for an estimated year inside ``temporal_train_years`` (default 2011–2013), ``test`` inside
  ``temporal_test_years`` (default 2014–2016: together MIMIC-CXR's years, so both sides have images),
  empty otherwise; a patient with any test stay has none on the training side (those stays are left
  empty), so no patient crosses the cut.
* An empty race is ``UNKNOWN``; empty insurance or language is ``Other`` (``group_maps.yaml``).
* CXR pairing: among frontal images with ``intime ≤ StudyDateTime < intime + window``, the latest
  StudyDateTime wins and a tie goes to the greatest ``dicom_id``. Frontal means ``ViewPosition`` is
  exactly ``AP`` or ``PA`` after trimming and upper-casing: blank views and the rare values
  (``AP AXIAL``, ``PA LLD``, ``AP LLD``, ``LL``, ``SWIMMERS``, ``XTABLE LATERAL``, ``LAO``, ``RAO``,
  ``LPO``) are never paired, since decubitus, axial and oblique projections are not the standard
  frontal film the encoder and the benchmark tradition assume.
  StudyDateTime is built from the integer StudyDate and the float StudyTime truncated to whole
  seconds, zero-padded to ``HHMMSS``.
* Rows are ordered by ``stay_id``.
* ``patients.dod`` (a date, no time) is never read: ``mortality`` is ``hospital_expire_flag`` and
  ``mortality_icu`` compares ``admissions.deathtime`` with ``outtime``.
* Every table read must have at least one row (an empty table is reported with its path).
"""

from __future__ import annotations

import logging
import warnings
from importlib import resources

import duckdb
import numpy as np
import pandas as pd
import yaml
from sklearn.model_selection import StratifiedGroupKFold

from mmfair.core.config import PrepConfig
from mmfair.core.data.mimic import (
    CHEXPERT_FINDINGS,
    CXR_CHEXPERT,
    CXR_METADATA,
    MimicSource,
    READ_ERRORS,
    checked_scan,
    query_df,
    read_error,
    require_rows,
    scan_sql,
)
from mmfair.core.data.phenotypes import PhenotypeMatcher, load_phenotypes
from mmfair.core.errors import ConfigError, InputFileError

log = logging.getLogger(__name__)

AGE_CAP = 91
AGE_GROUPS = ((18, "18-39"), (40, "40-59"), (60, "60-79"), (80, "80+"))
LOS_EDGES = (2, 3, 4, 5, 6, 7, 14)
FRONTAL_VIEWS = ("AP", "PA")

ERR_BAD_TIMESTAMP = "{path}: column {column!r} has a value that is not a timestamp: {value!r}"
ERR_TOO_FEW_SUBJECTS = ("the cohort has {n} patients, fewer than n_folds={k}; lower n_folds or widen the "
                        "cohort")
ERR_TOO_FEW_FOLDS = "n_folds must be at least 2 (one fold to test on, the rest to train on), got {k}"
ERR_EMPTY_COHORT = "no ICU stay is left after the cohort filters (see the attrition above): {steps}"
WARN_PROBLEM = "{file}: {rows} {reason} (excluded from the cohort; see attrition.csv)"
WARN_DONORS = ("hosp/admissions: {n} ICU stays ({share:.1%}) belong to admissions with dischtime not after "
               "admittime; MIMIC-IV's organ-donor pseudo-admissions are far rarer (warning above {limit:.0%}): "
               "check admittime/dischtime for swapped values")
DONOR_STEP = "admission length > 0 (dischtime after admittime; organ-donor pseudo-admissions)"
DONOR_WARN_SHARE = 0.01
WARN_TEMPORAL_EMPTY = ("temporal split: no stay on the {side} side (estimated years {years}); `train --split "
                       "temporal` will refuse (see prep.json temporal_split)")
WARN_TEMPORAL_NO_CXR = ("temporal split: no paired CXR on the {side} side (estimated years {years}); a temporal "
                        "test of a CXR method has nothing to read there")
DONOR_WARN_MIN = 10

DEMOGRAPHIC_COLUMNS = ["anchor_year_group", "temporal_split", "age", "age_group", "gender", "race",
                       "race_group", "insurance", "insurance_group", "language", "language_group",
                       "marital_status", "admission_type", "admission_location", "first_careunit"]
LABEL_COLUMNS = ["los_days", "mortality", "mortality_icu", "los_class"]
CXR_COLUMNS = ["has_cxr", "cxr_dicom_id", "cxr_study_id", "cxr_time_hours"]


def cohort_columns(pheno_columns: list[str]) -> list[str]:
    """The columns of ``cohort.csv`` in contract order."""
    return (["stay_id", "subject_id", "hadm_id", "intime", "outtime", "fold"] + DEMOGRAPHIC_COLUMNS
            + LABEL_COLUMNS + pheno_columns + CXR_COLUMNS)


# ---------------------------------------------------------------------------------------------- stays

def load_stays(con: duckdb.DuckDBPyConnection, source: MimicSource) -> pd.DataFrame:
    """All ICU stays joined to their admission and patient (left joins, so attrition can count)."""
    paths = {key: source.table(key) for key in ("icu/icustays", "hosp/admissions", "hosp/patients")}
    scans = {key: checked_scan(con, path, key) for key, path in paths.items()}
    _check_timestamps(con, scans["icu/icustays"], paths["icu/icustays"], ["intime", "outtime"])
    _check_timestamps(con, scans["hosp/admissions"], paths["hosp/admissions"],
                      ["admittime", "dischtime", "deathtime"])
    selects = {
        "icu/icustays": """SELECT subject_id, hadm_id, stay_id, CAST(intime AS TIMESTAMP) AS intime,
                   CAST(outtime AS TIMESTAMP) AS outtime, los AS los_days, first_careunit""",
        "hosp/admissions": """SELECT hadm_id AS a_hadm_id, CAST(admittime AS TIMESTAMP) AS admittime,
                   CAST(dischtime AS TIMESTAMP) AS dischtime, CAST(deathtime AS TIMESTAMP) AS deathtime,
                   admission_type, admission_location, insurance, language, marital_status, race,
                   hospital_expire_flag""",
        "hosp/patients": "SELECT subject_id AS p_subject_id, gender, anchor_age, anchor_year, anchor_year_group",
    }
    names = {key: "cohort_" + key.split("/")[1] for key in selects}
    try:
        for key, select in selects.items():    # one table at a time: a type error names its own file
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {names[key]} AS {select} FROM {scans[key]}")
            except READ_ERRORS as exc:
                raise read_error(paths[key], exc) from None
        stays = query_df(con, f"""
            SELECT * FROM {names["icu/icustays"]} s
            LEFT JOIN {names["hosp/admissions"]} a ON a.a_hadm_id = s.hadm_id
            LEFT JOIN {names["hosp/patients"]} p ON p.p_subject_id = s.subject_id
            ORDER BY s.stay_id""", paths["icu/icustays"])
    finally:
        for name in names.values():
            con.execute(f"DROP TABLE IF EXISTS {name}")
    require_rows(stays, paths["icu/icustays"])
    return stays


def _check_timestamps(con: duckdb.DuckDBPyConnection, scan: str, path, columns: list[str]) -> None:
    picks = ", ".join(
        f"min(CASE WHEN {c} IS NOT NULL AND TRY_CAST({c} AS TIMESTAMP) IS NULL THEN {c} END) AS {c}"
        for c in columns)
    row = query_df(con, f"SELECT {picks} FROM {scan}", path).iloc[0]
    for column in columns:
        if pd.notna(row[column]):
            raise InputFileError(ERR_BAD_TIMESTAMP.format(path=path, column=column, value=row[column]))


def apply_filters(stays: pd.DataFrame, config: PrepConfig) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """The cohort filters of DESIGN §3.1, in order: the kept stays, the attrition table, and the input
    problems found (``{"file", "reason", "rows"}``, each also logged as a warning)."""
    stays = stays.copy()
    stays["age"] = _age_at_admission(stays)
    stay_hours = (stays["outtime"] - stays["intime"]).dt.total_seconds() / 3600.0
    times_recorded = stays["intime"].notna() & stays["outtime"].notna()
    swapped = times_recorded & (stays["outtime"] < stays["intime"])
    admission_times = stays["admittime"].notna() & stays["dischtime"].notna()
    found = stays["a_hadm_id"].notna() & stays["p_subject_id"].notna()
    problems = _problems([
        ("icu/icustays", "rows with an empty intime or outtime", ~times_recorded),
        ("icu/icustays", "rows with outtime before intime", swapped),
        ("hosp/admissions", "ICU stays whose admission has an empty admittime or dischtime", found & ~admission_times),
    ])
    steps = [
        ("admission and patient records found", found),
        ("ICU intime and outtime recorded", times_recorded),
        ("ICU outtime not before intime", ~swapped),
        (f"age >= {config.min_age}", stays["age"] >= config.min_age),
        (f"ICU stay >= {config.min_stay_hours:g} h", stay_hours >= config.min_stay_hours),
        ("admittime and dischtime recorded", admission_times),
        (DONOR_STEP, stays["dischtime"] > stays["admittime"]),
    ]
    keep = pd.Series(True, index=stays.index)
    rows = [("all ICU stays", len(stays), 0, 0)]
    for name, mask in steps:
        before = int(keep.sum())
        keep &= mask.fillna(False).astype(bool)
        kept = int(keep.sum())
        rows.append((name, kept, before - kept, len(stays) - kept))
    attrition = pd.DataFrame(rows, columns=["step", "kept", "removed", "removed_total"])
    for row in attrition.itertuples(index=False):
        log.info("cohort: %-55s kept %7d  removed %7d", row.step, row.kept, row.removed)
    _warn_donor_share(int(attrition["removed"].iloc[-1]), len(stays))
    cohort = stays[keep].sort_values("stay_id").reset_index(drop=True)
    if cohort.empty:
        raise InputFileError(ERR_EMPTY_COHORT.format(steps="; ".join(f"{r[0]}: {r[1]}" for r in rows)))
    return cohort, attrition, problems


def _problems(checks: list[tuple[str, str, pd.Series]]) -> list[dict]:
    """The checks that flag any row, as ``{"file", "reason", "rows"}``, each logged as a warning."""
    problems = [{"file": f, "reason": reason, "rows": int(mask.sum())} for f, reason, mask in checks if mask.any()]
    for p in problems:
        log.warning(WARN_PROBLEM.format(**p))
    return problems


def _warn_donor_share(removed: int, total: int) -> None:
    if total and removed >= DONOR_WARN_MIN and removed / total > DONOR_WARN_SHARE:
        log.warning(WARN_DONORS.format(n=removed, share=removed / total, limit=DONOR_WARN_SHARE))


def _age_at_admission(stays: pd.DataFrame) -> pd.Series:
    age = stays["anchor_age"] + stays["intime"].dt.year - stays["anchor_year"]
    return age.clip(upper=AGE_CAP)


# ---------------------------------------------------------------------------------------- demographics

def load_group_maps() -> dict:
    """The packaged, editable race / insurance / language group maps."""
    text = (resources.files("mmfair.core.data") / "resources" / "group_maps.yaml").read_text()
    return yaml.safe_load(text)


def map_group(values: pd.Series, rules: dict) -> pd.Series:
    """Map raw strings to groups: exact matches first, then prefixes in file order (case-insensitive)."""
    exact: dict[str, str] = {}
    prefixes: list[tuple[str, str]] = []
    for group, spec in rules["groups"].items():
        for value in spec.get("exact", []) or []:
            exact[str(value).strip().upper()] = group
        for prefix in spec.get("prefix", []) or []:
            prefixes.append((str(prefix).strip().upper(), group))

    def one(raw: object) -> str:
        text = "" if pd.isna(raw) else str(raw).strip().upper()
        if not text:
            return rules["missing"]
        if text in exact:
            return exact[text]
        for prefix, group in prefixes:
            if text.startswith(prefix):
                return group
        return rules["default"]

    uniques = values.drop_duplicates()
    lookup = {u: one(u) for u in uniques}
    return values.map(lambda v: lookup.get(v, one(v)))


def age_group(age: pd.Series) -> pd.Series:
    labels = np.full(len(age), "<18", dtype=object)
    for low, label in AGE_GROUPS:
        labels[(age >= low).to_numpy()] = label
    return pd.Series(labels, index=age.index)


def add_demographics(cohort: pd.DataFrame, config: PrepConfig) -> pd.DataFrame:
    maps = load_group_maps()
    out = cohort.copy()
    for column in ("race", "insurance", "language", "marital_status", "admission_type", "admission_location",
                   "first_careunit", "anchor_year_group", "gender"):
        out[column] = out[column].fillna("").astype(str)
    out["age"] = out["age"].astype(int)
    out["age_group"] = age_group(out["age"])
    out["race_group"] = map_group(out["race"], maps["race"])
    out["insurance_group"] = map_group(out["insurance"], maps["insurance"])
    out["language_group"] = map_group(out["language"], maps["language"])
    out["temporal_split"] = temporal_split(out, config.temporal_train_years, config.temporal_test_years)
    return out


def estimated_year(stays: pd.DataFrame) -> pd.Series:
    """Start of ``anchor_year_group`` + ``year(intime) − anchor_year``: the earliest real year of each stay
    (float; NaN where the group is not ``YYYY - YYYY``)."""
    start = pd.to_numeric(stays["anchor_year_group"].astype(str).str.extract(r"^\s*(\d{4})\s*-", expand=False),
                          errors="coerce")
    return start + stays["intime"].dt.year - pd.to_numeric(stays["anchor_year"], errors="coerce")


def temporal_split(stays: pd.DataFrame, train_years: tuple[int, int], test_years: tuple[int, int]) -> pd.Series:
    """``train`` / ``test`` / empty per stay by its :func:`estimated_year`; the training-side stays of a patient
    who has a test stay are left empty, so no patient is on both sides."""
    year = estimated_year(stays)
    test = year.between(*test_years).to_numpy()
    subjects = stays["subject_id"].to_numpy()
    train = year.between(*train_years).to_numpy() & ~np.isin(subjects, subjects[test])
    return pd.Series(np.select([test, train], ["test", "train"], default=""), index=stays.index, dtype=object)


def temporal_summary(cohort: pd.DataFrame, train_years: tuple[int, int], test_years: tuple[int, int],
                     with_images: bool) -> dict:
    """Stays, patients and paired CXRs on each side of the temporal split (for ``prep.json``); warns when a side
    has no stay, or no CXR where a CXR root was given."""
    year = estimated_year(cohort)
    split = cohort["temporal_split"]
    summary: dict = {"train_years": list(train_years), "test_years": list(test_years),
                     "year_estimate": "anchor_year_group start + year(intime) - anchor_year (the earliest "
                                      "possible year; the true year is up to 2 years later)"}
    for side in ("train", "test"):
        rows = cohort[split == side]
        summary[side] = {"stays": int(len(rows)), "patients": int(rows["subject_id"].nunique()),
                         "with_cxr": int(rows["has_cxr"].sum())}
        years = _span(train_years if side == "train" else test_years)
        if summary[side]["stays"] == 0:
            log.warning(WARN_TEMPORAL_EMPTY.format(side=side, years=years))
        elif with_images and summary[side]["with_cxr"] == 0:
            log.warning(WARN_TEMPORAL_NO_CXR.format(side=side, years=years))
    in_train_years = year.between(*train_years) & (split == "")
    summary["excluded_patient_has_test_stay"] = int(in_train_years.sum())
    summary["outside_both_periods"] = int((~year.between(*train_years) & ~year.between(*test_years)).sum())
    return summary


def _span(years: tuple[int, int]) -> str:
    return f"{years[0]}-{years[1]}"


# --------------------------------------------------------------------------------------------- labels

def add_outcome_labels(cohort: pd.DataFrame, config: PrepConfig) -> pd.DataFrame:
    out = cohort.copy()
    out["mortality"] = out["hospital_expire_flag"].fillna(0).astype(int)
    tolerance = pd.Timedelta(hours=config.icu_death_tolerance_hours)
    died_in_unit = out["deathtime"].notna() & (out["deathtime"] <= out["outtime"] + tolerance)
    out["mortality_icu"] = died_in_unit.astype(int)
    out["los_class"] = los_class(out["los_days"].to_numpy(dtype=float))
    return out


def los_class(los_days: np.ndarray) -> np.ndarray:
    """0–6 on left-closed edges 2,3,4,5,6,7,14 (class 6 is ≥ 14 days; below 2 days is class 0)."""
    return np.clip(np.searchsorted(LOS_EDGES, los_days, side="right") - 1, 0, len(LOS_EDGES) - 1).astype(int)


def add_phenotypes(con: duckdb.DuckDBPyConnection, source: MimicSource, cohort: pd.DataFrame,
                   icd10_mode: str) -> tuple[pd.DataFrame, list[str], dict]:
    """25 ``pheno_<slug>`` columns from the discharge codes of each stay's admission."""
    path = source.table("hosp/diagnoses_icd")
    scan = checked_scan(con, path, "hosp/diagnoses_icd")
    hadm_ids = np.unique(cohort["hadm_id"].to_numpy(dtype=np.int64))
    con.register("cohort_hadm", pd.DataFrame({"hadm_id": hadm_ids}))
    try:
        diagnoses = query_df(con, f"""
            SELECT d.hadm_id, d.icd_version, trim(d.icd_code) AS icd_code
            FROM {scan} d JOIN cohort_hadm h USING (hadm_id)
            WHERE d.icd_code IS NOT NULL AND d.icd_version IS NOT NULL""", path)
    finally:
        con.unregister("cohort_hadm")
    matcher = PhenotypeMatcher(load_phenotypes(), icd10_mode)
    per_hadm = matcher.label_matrix(diagnoses, hadm_ids)
    labels = per_hadm[np.searchsorted(hadm_ids, cohort["hadm_id"].to_numpy(dtype=np.int64))]
    out = cohort.copy()
    for k, column in enumerate(matcher.columns):
        out[column] = labels[:, k].astype(int)
    prevalence = matcher.prevalence_by_version(diagnoses, per_hadm, hadm_ids)
    return out, matcher.columns, prevalence


# ---------------------------------------------------------------------------------------------- folds

def assign_folds(cohort: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Patient-level folds stratified on mortality (StratifiedGroupKFold, shuffled with ``seed``)."""
    if n_folds < 2:
        raise ConfigError(ERR_TOO_FEW_FOLDS.format(k=n_folds))
    n_subjects = cohort["subject_id"].nunique()
    if n_subjects < n_folds:
        raise ConfigError(ERR_TOO_FEW_SUBJECTS.format(n=n_subjects, k=n_folds))
    folds = np.full(len(cohort), -1, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k, (_, test_idx) in enumerate(splitter.split(np.zeros(len(cohort)), cohort["mortality"].to_numpy(),
                                                         cohort["subject_id"].to_numpy())):
            folds[test_idx] = k
    for w in caught:
        log.warning("fold assignment: %s", w.message)
    return folds


# ------------------------------------------------------------------------------------------ CXR pairing

def _metadata_frontal_sql(scan: str) -> str:
    return f"""
        SELECT dicom_id, subject_id, study_id,
               make_timestamp(CAST(StudyDate // 10000 AS BIGINT), CAST((StudyDate // 100) % 100 AS BIGINT),
                              CAST(StudyDate % 100 AS BIGINT), t // 10000, (t // 100) % 100,
                              CAST(t % 100 AS DOUBLE)) AS study_time
        FROM (SELECT *, CAST(floor(StudyTime) AS BIGINT) AS t FROM {scan}
              WHERE upper(trim(ViewPosition)) IN {FRONTAL_VIEWS}
                AND StudyDate IS NOT NULL AND StudyTime IS NOT NULL AND dicom_id IS NOT NULL)
    """


def pair_cxr(con: duckdb.DuckDBPyConnection, source: MimicSource, cohort: pd.DataFrame,
             window_hours: int) -> pd.DataFrame:
    """The paired frontal image of each stay that has one: ``stay_id, dicom_id, study_id, subject_id,
    cxr_time_hours``."""
    path = source.cxr_table(CXR_METADATA, "metadata")
    frontal = _metadata_frontal_sql(checked_scan(con, path, "cxr/metadata"))
    con.register("cohort_windows", cohort[["stay_id", "subject_id", "intime"]])
    try:
        pairs = query_df(con, f"""
            SELECT c.stay_id, m.dicom_id, m.study_id, m.subject_id,
                   epoch(m.study_time - c.intime) / 3600.0 AS cxr_time_hours
            FROM cohort_windows c JOIN ({frontal}) m
              ON m.subject_id = c.subject_id
             AND m.study_time >= c.intime
             AND m.study_time < c.intime + to_hours(CAST({int(window_hours)} AS BIGINT))
            QUALIFY row_number() OVER (PARTITION BY c.stay_id ORDER BY m.study_time DESC, m.dicom_id DESC) = 1
            ORDER BY c.stay_id""", path)
    finally:
        con.unregister("cohort_windows")
    return pairs


def add_cxr_columns(cohort: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    out = cohort.merge(pairs[["stay_id", "dicom_id", "study_id", "cxr_time_hours"]], on="stay_id", how="left")
    out["has_cxr"] = out["dicom_id"].notna().astype(int)
    out["cxr_dicom_id"] = out["dicom_id"].fillna("")
    out["cxr_study_id"] = out["study_id"].astype("Int64")
    out["cxr_time_hours"] = out["cxr_time_hours"].round(4)
    return out.drop(columns=["dicom_id", "study_id"])


def encoder_training_set(con: duckdb.DuckDBPyConnection, source: MimicSource, cohort_subjects: np.ndarray,
                         max_images: int, seed: int) -> pd.DataFrame:
    """Frontal images of MIMIC-CXR subjects outside the cohort, with their study's CheXpert labels.

    Returns ``dicom_id, subject_id, study_id`` and the 14 finding columns (1, 0, −1, NaN for blank),
    sorted by ``dicom_id`` and, above ``max_images``, subsampled with ``seed``.
    """
    meta_path = source.cxr_table(CXR_METADATA, "metadata")
    chex_path = source.cxr_table(CXR_CHEXPERT, "CheXpert labels")
    frontal = _metadata_frontal_sql(scan_sql(meta_path, "cxr/metadata"))
    chex_scan = scan_sql(chex_path, "cxr/chexpert")
    findings = ", ".join(f'ch."{f}"' for f in CHEXPERT_FINDINGS)
    con.register("cohort_subjects", pd.DataFrame({"subject_id": np.unique(cohort_subjects).astype(np.int64)}))
    try:
        table = query_df(con, f"""
            SELECT m.dicom_id, m.subject_id, m.study_id, {findings}
            FROM ({frontal}) m
            LEFT JOIN {chex_scan} ch ON ch.study_id = m.study_id AND ch.subject_id = m.subject_id
            WHERE m.subject_id NOT IN (SELECT subject_id FROM cohort_subjects)
            ORDER BY m.dicom_id""", chex_path)
    finally:
        con.unregister("cohort_subjects")
    if len(table) > max_images:
        rng = np.random.default_rng(seed)
        picks = np.sort(rng.choice(len(table), size=max_images, replace=False))
        log.info("encoder: %d non-cohort frontal images, using a random %d", len(table), max_images)
        table = table.iloc[picks].reset_index(drop=True)
    return table
