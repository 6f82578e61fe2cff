"""MIMIC-CXR-JPG studies: which stays get a film and when, what it shows, and its CheXpert labels.

What is planted, and why:

* Acquisition. About ``cxr_availability`` of cohort stays get a frontal (AP/PA) study inside the
  observation window [intime, intime + 48 h); some get two (the later one is the pairing), some have only
  studies outside the window or a lateral-only / blank-view study inside it (none of which may pair).
  ``group_missingness``: Black and Hispanic patients are less likely to be imaged in the window (missing
  not at random with respect to group). ``year_acquisition``: stays whose anchor_year_group lies outside
  MIMIC-CXR's real years (2011–2016) get no film at all; the rate in the other years rises so the overall
  share stays near the target.
* Findings come from the CXR latents only (cardiac → heart width, pulmonary → edema and effusion,
  infection → opacities) and from the device flag, so the image carries exactly the information the
  oracle assumes. CheXpert labels are derived from the drawn findings with realistic uncertainty
  (−1) and blanks (not mentioned).
* Non-cohort subjects (``n_encoder_subjects``) have 1–2 studies each from the same finding model, for
  training the CXR encoder on patients who are never in the ICU cohort.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmfair.core.config import SyntheticConfig
from mmfair.core.synthetic import _model as model
from mmfair.core.synthetic import _vocab as v

HOUR = 3600
DAY = 24 * HOUR
WINDOW_HOURS = 48
GROUP_ACQUISITION = {"WHITE": 1.0, "BLACK": 0.62, "HISPANIC": 0.70, "ASIAN": 0.95, "OTHER": 0.9, "UNKNOWN": 0.85}


def acquisition_probability(stays: pd.DataFrame, config: SyntheticConfig) -> np.ndarray:
    """Per cohort stay, the probability of a frontal film inside the window (mean = cxr_availability)."""
    n = len(stays)
    weight = np.ones(n)
    if config.group_missingness:
        weight *= stays["race_group"].map(GROUP_ACQUISITION).to_numpy(dtype=float)
    if config.year_acquisition:
        weight *= stays["anchor_year_group"].isin(v.CXR_YEAR_GROUPS).to_numpy()
    target = config.cxr_availability
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.minimum(mid * weight, 0.97).mean() > target:
            hi = mid
        else:
            lo = mid
    return np.minimum(0.5 * (lo + hi) * weight, 0.97) if n else weight


def study_findings(latents: np.ndarray, device: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Drawn findings per study (one row per study) from its stay's or subject's latents."""
    n = len(latents)
    cardiac = latents[:, model.L["cardiac"]]
    pulm = latents[:, model.L["pulmonary"]]
    infection = latents[:, model.L["infection"]]
    inflammation = latents[:, model.L["inflammation"]]
    ctr = np.clip(0.45 + 0.065 * cardiac + rng.normal(0, 0.008, n), 0.33, 0.68)
    effusion = pulm > 0.5
    height = np.where(effusion, np.clip(0.10 + 0.20 * (pulm - 0.5), 0.10, 0.38), 0.0)
    both = pulm > 1.2
    right_side = rng.random(n) < 0.6
    eff_right = np.where(both | right_side, height, 0.0)
    eff_left = np.where(both | ~right_side, height * np.where(both, 0.8, 1.0), 0.0)
    edema = np.clip((pulm - 0.3) / 1.4, 0, 1)
    n_blobs = np.where(infection > 0.35, 1 + (infection > 0.9) + (infection > 1.5), 0)
    strength = np.clip(0.6 + 0.3 * (infection - 0.35), 0.6, 1.1)
    ett = device & (rng.random(n) < 0.85)
    central = (device & (rng.random(n) < 0.75)) | (rng.random(n) < 0.08)
    ng = device & (rng.random(n) < 0.5)
    pacemaker = rng.random(n) < model.sigmoid(-3.2 + 0.8 * cardiac)
    atelectasis = np.where(rng.random(n) < 0.10 + 0.10 * device, np.where(rng.random(n) < 0.5, -1, 1), 0)
    lesion = rng.random(n) < 0.04
    pneumothorax = np.where(rng.random(n) < 0.02 + 0.03 * device, np.where(rng.random(n) < 0.5, -1, 1), 0)
    blobs = []
    for k in range(n):
        sides = rng.choice([-1, 1], size=n_blobs[k])
        blobs.append([(float(s * rng.uniform(0.28, 0.52)), float(rng.uniform(0.36, 0.70)),
                       float(rng.uniform(0.09, 0.15)), float(strength[k])) for s in sides])
    lesion_at = [(float(rng.choice([-1, 1]) * rng.uniform(0.3, 0.5)), float(rng.uniform(0.3, 0.6))) if lesion[k] else None
                 for k in range(n)]
    frame = pd.DataFrame({
        "ctr": ctr, "effusion_right": eff_right, "effusion_left": eff_left, "edema": np.where(pulm > 0.3, edema, 0.0),
        "n_blobs": n_blobs, "ett": ett, "central_line": central, "ng_tube": ng, "pacemaker": pacemaker,
        "atelectasis": atelectasis, "pneumothorax": pneumothorax,
    })
    frame["blobs"] = blobs
    frame["lesion"] = lesion_at
    truth = {
        "Atelectasis": atelectasis != 0,
        "Cardiomegaly": ctr > 0.50,
        "Consolidation": infection > 1.0,
        "Edema": pulm > 0.9,
        "Enlarged Cardiomediastinum": ((ctr > 0.53) & (rng.random(n) < 0.5)) | (rng.random(n) < 0.03),
        "Fracture": rng.random(n) < 0.02,
        "Lung Lesion": lesion,
        "Lung Opacity": (n_blobs > 0) | (pulm > 0.9) | (atelectasis != 0),
        "Pleural Effusion": effusion,
        "Pleural Other": rng.random(n) < 0.01,
        "Pneumonia": (infection > 0.8) & (inflammation > -0.3),
        "Pneumothorax": pneumothorax != 0,
        "Support Devices": ett | central | ng | pacemaker,
    }
    pathology = np.zeros(n, bool)
    for name, flag in truth.items():
        if name != "Support Devices":
            pathology |= flag
    truth["No Finding"] = ~pathology
    for name in v.CHEXPERT_LABELS:
        frame[f"true_{name}"] = truth[name]
    return frame


def chexpert_values(truth: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Report-style labels: positives mostly 1.0 (some −1.0), negatives mostly blank, some 0.0."""
    out = {}
    n = len(truth)
    for name in v.CHEXPERT_LABELS:
        positive = truth[f"true_{name}"].to_numpy()
        u = rng.random(n)
        if name == "No Finding":
            out[name] = np.where(positive, 1.0, np.nan)
            continue
        pos = np.where(u < 0.88, 1.0, -1.0)
        neg = np.where(u < 0.68, np.nan, np.where(u < 0.97, 0.0, -1.0))
        out[name] = np.where(positive, pos, neg)
    return pd.DataFrame(out)


def plan_studies(config: SyntheticConfig, stays: pd.DataFrame, encoder: pd.DataFrame, rng: np.random.Generator):
    """Return (studies, acquisition probability per stay row, planted study per stay row)."""
    records: list[dict] = []
    cohort_rows = np.flatnonzero(stays["cohort"].to_numpy() == 1)
    cohort = stays.iloc[cohort_rows]
    p_acq = np.zeros(len(stays))
    p_acq[cohort_rows] = acquisition_probability(cohort, config)
    planted = np.zeros(len(stays), bool)
    planted[cohort_rows] = rng.random(len(cohort_rows)) < p_acq[cohort_rows]
    eligible = np.ones(len(stays), bool)
    if config.year_acquisition:
        eligible = stays["anchor_year_group"].isin(v.CXR_YEAR_GROUPS).to_numpy()
    intime = stays["intime"].to_numpy().astype("datetime64[ms]")
    outtime = stays["outtime"].to_numpy().astype("datetime64[ms]")

    def at(row: int, seconds: float) -> np.datetime64:
        return intime[row] + np.timedelta64(int(seconds * 1000), "ms")

    for row in cohort_rows:
        base = {"subject_id": int(stays["subject_id"].iat[row]), "stay_row": row}
        if planted[row]:
            t_last = rng.uniform(0.5 * HOUR, (WINDOW_HOURS - 0.5) * HOUR)
            if rng.random() < 0.3 and t_last > 2 * HOUR:
                records.append({**base, "time": at(row, rng.uniform(0, t_last - HOUR)), "kind": "window_earlier",
                                "views": _frontal_views(rng, icu=True)})
            records.append({**base, "time": at(row, t_last), "kind": "window", "views": _frontal_views(rng, icu=True)})
        if not eligible[row]:
            continue
        if rng.random() < 0.35:
            if rng.random() < 0.5:
                t = -rng.uniform(2 * HOUR, 5 * DAY)
            else:
                stay_s = (outtime[row] - intime[row]).astype(np.int64) / 1000
                t = rng.uniform(WINDOW_HOURS * HOUR + 60, max(stay_s, WINDOW_HOURS * HOUR + 2 * HOUR) + 3 * DAY)
            records.append({**base, "time": at(row, t), "kind": "outside_window", "views": _frontal_views(rng, icu=True)})
        if not planted[row]:
            u = rng.random()
            if u < 0.08:
                records.append({**base, "time": at(row, rng.uniform(HOUR, 46 * HOUR)), "kind": "lateral_only",
                                "views": ["LATERAL"]})
            elif u < 0.11:
                records.append({**base, "time": at(row, rng.uniform(HOUR, 46 * HOUR)), "kind": "blank_view_only",
                                "views": [""]})
    enc_base = encoder["base_time"].to_numpy().astype("datetime64[ms]")
    for k in range(len(encoder)):
        base = {"subject_id": int(encoder["subject_id"].iat[k]), "encoder_row": k}
        t0 = enc_base[k] + np.timedelta64(int(rng.uniform(0, 3 * DAY) * 1000), "ms")
        records.append({**base, "time": t0, "kind": "encoder", "views": _frontal_views(rng, icu=False)})
        if rng.random() < 0.4:
            t1 = t0 + np.timedelta64(int(rng.uniform(30 * DAY, 400 * DAY) * 1000), "ms")
            records.append({**base, "time": t1, "kind": "encoder", "views": _frontal_views(rng, icu=False)})
    studies = pd.DataFrame.from_records(records, columns=["subject_id", "stay_row", "encoder_row", "time", "kind", "views"])
    studies["stay_row"] = studies["stay_row"].fillna(-1).astype(np.int64)
    studies["encoder_row"] = studies["encoder_row"].fillna(-1).astype(np.int64)
    studies["study_id"] = _unique_ids(rng, len(studies), 5)
    lat_cols = [f"latent_{n}" for n in model.LATENTS]
    lat = np.zeros((len(studies), len(model.LATENTS)))
    dev = np.zeros(len(studies), bool)
    from_stay = studies["stay_row"].to_numpy() >= 0
    lat[from_stay] = stays[lat_cols].to_numpy()[studies["stay_row"].to_numpy()[from_stay]]
    dev[from_stay] = stays["device"].to_numpy()[studies["stay_row"].to_numpy()[from_stay]].astype(bool)
    enc_rows = studies["encoder_row"].to_numpy()[~from_stay]
    lat[~from_stay] = encoder[lat_cols].to_numpy()[enc_rows]
    dev[~from_stay] = encoder["device"].to_numpy()[enc_rows].astype(bool)
    findings = study_findings(lat, dev, rng)
    studies = pd.concat([studies.reset_index(drop=True), findings], axis=1)
    return studies, p_acq, planted


def with_demographics(studies: pd.DataFrame, stays: pd.DataFrame, encoder: pd.DataFrame) -> pd.DataFrame:
    """``studies`` with their patient's ``demo_gender``, ``demo_age`` and ``demo_race_group`` (the image
    demographic signal): from the stay (age at the stay) or the non-cohort subject (anchor age)."""
    out = studies.copy()
    from_stay = out["stay_row"].to_numpy() >= 0
    stay_rows, enc_rows = out["stay_row"].to_numpy()[from_stay], out["encoder_row"].to_numpy()[~from_stay]
    for column, stay_col, enc_col in (("demo_gender", "gender", "gender"), ("demo_age", "age", "anchor_age"),
                                      ("demo_race_group", "race_group", "race_group")):
        values = np.empty(len(out), dtype=object)
        values[from_stay] = stays[stay_col].to_numpy()[stay_rows]
        values[~from_stay] = encoder[enc_col].to_numpy()[enc_rows]
        out[column] = values
    return out


def _frontal_views(rng: np.random.Generator, icu: bool) -> list[str]:
    frontal = "AP" if rng.random() < (0.78 if icu else 0.4) else "PA"
    views = [frontal]
    if rng.random() < (0.25 if frontal == "AP" else 0.9):
        views.append("LATERAL")
    if rng.random() < 0.04:
        views.append("")
    return views


def _unique_ids(rng: np.random.Generator, n: int, first_digit: int) -> np.ndarray:
    span = 10_000_000
    step = max(2, span // max(n, 1) - 1)
    return rng.permutation(first_digit * span + np.cumsum(rng.integers(1, step, size=n)))


def dicom_ids(rng: np.random.Generator, n: int) -> list[str]:
    words = rng.integers(0, 2**32, size=(n, 5), dtype=np.uint64)
    return ["-".join(f"{int(w):08x}" for w in row) for row in words]


_PROCEDURE = {"AP": "CHEST (PORTABLE AP)", "PA": "CHEST (PA AND LAT)"}
_VIEW_MEANING = {"AP": "antero-posterior", "PA": "postero-anterior", "LATERAL": "lateral", "": ""}


def images_and_tables(config: SyntheticConfig, studies: pd.DataFrame, rng: np.random.Generator):
    """Per-image rows (metadata + render parameters) and the CheXpert and split tables."""
    rows = []
    ids_needed = int(sum(len(vs) for vs in studies["views"]))
    dicoms = iter(dicom_ids(rng, ids_needed))
    lo, hi = sorted((config.min_image_size, config.max_image_size))
    for s in studies.itertuples(index=False):
        procedure = _PROCEDURE["AP" if "AP" in s.views else "PA"]
        if rng.random() < 0.03:
            procedure = ""
        for view in s.views:
            height = int(rng.integers(lo, hi + 1))
            width = int(np.clip(round(height * rng.uniform(0.86, 1.16)), lo, hi))
            frontal = view in ("AP", "PA", "")
            margin = rng.uniform(0.0, 0.05, 4)
            params = {
                "frontal": frontal,
                "ctr": float(s.ctr + (0.02 if view == "AP" else 0.0)),
                "effusion_left": float(s.effusion_left), "effusion_right": float(s.effusion_right),
                "edema": float(s.edema), "blobs": list(s.blobs), "atelectasis": int(s.atelectasis),
                "lesion": s.lesion, "pneumothorax": int(s.pneumothorax), "ett": bool(s.ett),
                "central_line": bool(s.central_line), "pacemaker": bool(s.pacemaker), "ng_tube": bool(s.ng_tube),
                "gamma": float(rng.uniform(0.8, 1.25)), "contrast": float(rng.uniform(0.85, 1.1)),
                "brightness": float(rng.uniform(-0.05, 0.06)), "width": width, "height": height,
                "crop": (float(margin[0]), float(margin[1]), float(1 - margin[2]), float(1 - margin[3])),
            }
            if config.image_demographic_signal:  # no random draw: every other film parameter is unchanged
                params["demographics"] = {"female": s.demo_gender == "F", "age": float(s.demo_age),
                                          "race_group": str(s.demo_race_group)}
            orientation = "Erect" if view == "PA" else ("Recumbent" if view == "AP" else "")
            if rng.random() < 0.1:
                orientation = ""
            rows.append({
                "dicom_id": next(dicoms), "subject_id": s.subject_id, "study_id": int(s.study_id),
                "PerformedProcedureStepDescription": procedure, "ViewPosition": view, "Rows": height,
                "Columns": width, "time": s.time, "ProcedureCodeSequence_CodeMeaning": procedure,
                "ViewCodeSequence_CodeMeaning": _VIEW_MEANING[view],
                "PatientOrientationCodeSequence_CodeMeaning": orientation, "params": params,
                "seed": int(rng.integers(0, 2**31)),
            })
    images = pd.DataFrame(rows)
    times = images["time"].to_numpy().astype("datetime64[ms]")
    day = times.astype("datetime64[D]")
    ms_of_day = (times - day).astype(np.int64)
    secs = ms_of_day // 1000
    images["StudyDate"] = np.char.replace(np.datetime_as_string(day, unit="D"), "-", "").astype(np.int64)
    hhmmss = (secs // 3600) * 10000 + (secs % 3600 // 60) * 100 + secs % 60
    images["StudyTime"] = hhmmss + (ms_of_day % 1000) / 1000.0
    images = images.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable").reset_index(drop=True)
    chexpert = chexpert_values(studies, rng)
    chexpert.insert(0, "study_id", studies["study_id"].to_numpy())
    chexpert.insert(0, "subject_id", studies["subject_id"].to_numpy())
    chexpert = chexpert.sort_values(["subject_id", "study_id"], kind="stable").reset_index(drop=True)
    subjects = images["subject_id"].unique()
    u = rng.random(len(subjects))
    split_of = dict(zip(subjects, np.where(u < 0.97, "train", np.where(u < 0.98, "validate", "test"))))
    split = images[["dicom_id", "study_id", "subject_id"]].copy()
    split["split"] = split["subject_id"].map(split_of)
    return images, chexpert, split
