"""A tiny valid workspace (DESIGN §3.1 cohort.csv + §3.2 features.h5) with a planted mortality signal.

A module of its own, not conftest.py: several test folders have a conftest.py, and ``from conftest import``
picks whichever was imported first."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from mmfair.core.workspace import Workspace

PHENOTYPES = (
    "acute_renal_failure acute_cerebrovascular_disease acute_myocardial_infarction cardiac_dysrhythmias "
    "chronic_kidney_disease copd_bronchiectasis surgical_complications conduction_disorders "
    "congestive_heart_failure coronary_atherosclerosis diabetes_with_complications diabetes_without_complication "
    "lipid_disorders essential_hypertension fluid_electrolyte_disorders gastrointestinal_hemorrhage "
    "hypertension_with_complications other_liver_diseases other_lower_respiratory other_upper_respiratory "
    "pleurisy_pneumothorax_collapse pneumonia respiratory_failure septicemia shock"
).split()
ENCODER_ID = "test-enc"


def build_tiny_workspace(
    root: Path, n_stays: int = 120, n_features: int = 5, cxr_dim: int = 16, seed: int = 0, cxr_share: float = 0.6
) -> Workspace:
    """Write data/cohort.csv and data/features.h5. Mortality depends on EHR feature 0 and CXR dim 0."""
    rng = np.random.default_rng(seed)
    ws = Workspace.resolve(root)
    ws.data.mkdir(parents=True, exist_ok=True)
    # subjects: the first 6 subjects have two stays each
    subject_of_stay = np.concatenate([np.repeat(np.arange(6), 2), np.arange(6, n_stays - 6)])
    n_subjects = subject_of_stay.max() + 1
    subject_fold = rng.permutation(np.arange(n_subjects) % 5)
    severity = rng.normal(size=n_stays)
    lung = rng.normal(size=n_stays)
    has_cxr = rng.random(n_stays) < cxr_share
    risk = 1.5 * severity + 1.5 * np.where(has_cxr, lung, 0.0) + 0.3 * rng.normal(size=n_stays)
    mortality = (risk > np.quantile(risk, 0.7)).astype(int)

    values = rng.normal(size=(n_stays, 48, n_features)).astype(np.float32) * 2 + 10
    values[:, :, 0] += 3 * severity[:, None]
    values[rng.random(values.shape) < 0.4] = np.nan
    values[:, :3, 1] = np.nan  # leading gaps: filled with the training median
    n_img = int(has_cxr.sum())
    cxr_row = np.full(n_stays, -1, dtype=np.int64)
    cxr_row[has_cxr] = np.arange(n_img)
    emb = rng.normal(size=(n_img, cxr_dim)).astype(np.float32)
    emb[:, 0] += 2 * lung[has_cxr]

    race = rng.choice(["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC OR LATINO", "ASIAN", "OTHER"], size=n_stays)
    race_group = pd.Series(race).map(
        {"WHITE": "WHITE", "BLACK/AFRICAN AMERICAN": "BLACK", "HISPANIC OR LATINO": "HISPANIC", "ASIAN": "ASIAN", "OTHER": "OTHER"}
    )
    age = rng.integers(18, 92, size=n_stays)
    intime = pd.Timestamp("2150-01-01") + pd.to_timedelta(rng.integers(0, 3000, size=n_stays), unit="D")
    los = rng.uniform(2, 20, size=n_stays)
    insurance = rng.choice(["Medicare", "Medicaid", "Other"], size=n_stays)
    cohort = pd.DataFrame(
        {
            "stay_id": 30_000_000 + np.arange(n_stays),
            "subject_id": 10_000_000 + subject_of_stay,
            "hadm_id": 20_000_000 + np.arange(n_stays),
            "intime": intime.strftime("%Y-%m-%d %H:%M:%S"),
            "outtime": (intime + pd.to_timedelta(los, unit="D")).strftime("%Y-%m-%d %H:%M:%S"),
            "fold": subject_fold[subject_of_stay],
            "anchor_year_group": rng.choice(["2011 - 2013", "2014 - 2016"], size=n_stays),
            "temporal_split": "train",
            "age": age,
            "age_group": pd.cut(age, [17, 39, 59, 79, 200], labels=["18-39", "40-59", "60-79", "80+"]).astype(str),
            "gender": rng.choice(["F", "M"], size=n_stays),
            "race": race,
            "race_group": race_group,
            "insurance": insurance,
            "insurance_group": insurance,
            "language": "ENGLISH",
            "language_group": "English",
            "marital_status": rng.choice(["MARRIED", "SINGLE", ""], size=n_stays),
            "admission_type": rng.choice(["EW EMER.", "URGENT"], size=n_stays),
            "los_days": los.round(4),
            "mortality": mortality,
            "mortality_icu": mortality * (rng.random(n_stays) < 0.8),
            "los_class": np.digitize(los, [2, 3, 4, 5, 6, 7, 14]) - 1,
        }
    )
    cohort["temporal_split"] = np.where(cohort["anchor_year_group"] == "2014 - 2016", "test", "train")
    for j, slug in enumerate(PHENOTYPES):
        logit = (severity if j % 2 else lung) * 1.5 - 1 + rng.normal(size=n_stays)
        cohort[f"pheno_{slug}"] = (logit > 0).astype(int)
    cohort["has_cxr"] = has_cxr.astype(int)
    cohort["cxr_dicom_id"] = np.where(has_cxr, [f"d{i:06d}" for i in range(n_stays)], "")
    cohort["cxr_study_id"] = np.where(has_cxr, (50_000_000 + np.arange(n_stays)).astype(str), "")
    cohort["cxr_time_hours"] = np.where(has_cxr, rng.uniform(0, 48, size=n_stays).round(2).astype(str), "")
    cohort.to_csv(ws.cohort_csv, index=False)

    with h5py.File(ws.features_h5, "w") as h5:
        h5.attrs["mmfair_version"] = "0.1.0"
        h5.attrs["schema_version"] = 1
        h5.attrs["source"] = "synthetic"
        h5.attrs["config"] = "{}"
        h5.attrs["fingerprint"] = f"tiny-{seed}-{n_stays}"
        h5["stay_id"] = cohort["stay_id"].to_numpy(dtype=np.int64)
        h5["ehr/values"] = values
        h5["ehr/feature_names"] = np.array([f"var{j}".encode() for j in range(n_features)])
        h5["ehr/feature_groups"] = np.array([b"vitals"] * n_features)
        h5["cxr/images"] = rng.integers(0, 256, size=(n_img, 32, 32), dtype=np.uint8)
        h5["cxr/row"] = cxr_row
        h5[f"cxr/embeddings/{ENCODER_ID}"] = emb.astype(np.float16)
    return ws


