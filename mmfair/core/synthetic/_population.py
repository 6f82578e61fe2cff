"""Subjects, admissions, ICU stays, latent states, outcomes and diagnosis codes.

The cohort filters of prep (age ≥ 18 at intime, ICU stay ≥ 48 h, admission length > 0) must keep exactly
``n_stays`` stays, so the generator plans cohort stays and *excluded* stays separately: minors, short
stays and organ-donor pseudo-admissions (dischtime ≤ admittime) are emitted as their own subjects, each
failing exactly one filter. Some cohort subjects have two ICU stays; the latents of a subject's two stays
share one mean, which lets a stay that dies be placed last without changing the generating distribution
(when both die, the two stays share one admission, as an ICU readmission would).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmfair.core.config import SyntheticConfig
from mmfair.core.synthetic import _model as model
from mmfair.core.synthetic import _vocab as vocab
from mmfair.core.synthetic._icd_codes import PHENOTYPE_CODES

HOUR = 3600
DAY = 24 * HOUR
REFERENCE_SEED = 20240917  # fixed: intercepts must not move with config.seed


@dataclass
class Population:
    patients: pd.DataFrame
    admissions: pd.DataFrame
    icustays: pd.DataFrame
    diagnoses: pd.DataFrame
    stays: pd.DataFrame          # one row per ICU stay: ids, times, demographics, latents, outcomes (ground truth)
    latent_mean: np.ndarray      # [n_stays, n_latents], the mean each stay's latents were drawn from
    intercepts: dict[str, float]
    encoder_subjects: pd.DataFrame  # non-cohort MIMIC-CXR subjects: id, latents, device, base time


def _choice(rng: np.random.Generator, shares: dict[str, float], size: int) -> np.ndarray:
    keys = list(shares)
    p = np.array([shares[k] for k in keys], dtype=float)
    return np.array(keys, dtype=object)[rng.choice(len(keys), size=size, p=p / p.sum())]


def unique_ids(rng: np.random.Generator, n: int, first_digit: int) -> np.ndarray:
    """``n`` distinct 8-digit ids starting with ``first_digit``, in random order."""
    span = 10_000_000
    step = max(2, span // max(n, 1) - 1)
    ids = first_digit * span + np.cumsum(rng.integers(1, step, size=n))
    assert ids[-1] < (first_digit + 1) * span
    return rng.permutation(ids)


def provider_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    alphabet = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    chars = alphabet[rng.integers(0, len(alphabet), size=(n, 5))]
    return np.array(["P" + "".join(row) for row in chars], dtype=object)


def year_start(years: np.ndarray) -> np.ndarray:
    return (np.asarray(years, dtype=np.int64) - 1970).astype("datetime64[Y]").astype("datetime64[s]")


def year_of(times: np.ndarray) -> np.ndarray:
    return times.astype("datetime64[Y]").astype(np.int64) + 1970


def month_of(times: np.ndarray) -> np.ndarray:
    return times.astype("datetime64[M]").astype(np.int64) % 12 + 1


def _minutes(seconds: np.ndarray) -> np.ndarray:
    return (np.asarray(seconds) // 60 * 60).astype(np.int64)


def sample_demographics(rng: np.random.Generator, n: int, version: str) -> dict[str, np.ndarray]:
    race = _choice(rng, vocab.RACE_SHARES, n)
    true_age = np.clip(rng.normal(64.7, 16.9, n), 18, 100)
    return {
        "gender": np.where(rng.random(n) < 0.443, "F", "M").astype(object),
        "race": race,
        "race_group": np.array([vocab.race_group(r) for r in race], dtype=object),
        "true_age": true_age,
        "insurance": _choice(rng, vocab.INSURANCE_SHARES[version], n),
        "language": _choice(rng, vocab.LANGUAGE_SHARES[version], n),
        "marital_status": _choice(rng, vocab.MARITAL_SHARES, n),
        "anchor_year_group": _choice(rng, vocab.ANCHOR_YEAR_GROUPS[version], n),
    }


def reference_intercepts() -> dict[str, float]:
    """Label intercepts calibrated on a fixed reference population with every group switch off."""
    rng = np.random.default_rng(REFERENCE_SEED)
    n = 60_000
    demo = sample_demographics(rng, n, "2.2")
    mu = model.latent_means(demo["true_age"], demo["gender"] == "M", demo["race_group"], group_base_rates=False)
    latents = mu + rng.multivariate_normal(np.zeros(len(model.LATENTS)), model.latent_covariance(), size=n)
    return model.calibrate_intercepts(latents)


def _pick_codes_by_version() -> dict[int, dict[str, list[str]]]:
    """Per version and phenotype, the codes whose (ICD-10) 3-character category belongs to that group only."""
    owners: dict[str, set[str]] = {}
    for name, codes in PHENOTYPE_CODES.items():
        for code in codes[10]:
            owners.setdefault(code[:3], set()).add(name)
    picks: dict[int, dict[str, list[str]]] = {9: {}, 10: {}}
    for name, codes in PHENOTYPE_CODES.items():
        picks[9][name] = list(codes[9])
        unambiguous = [c for c in codes[10] if owners[c[:3]] == {name}]
        picks[10][name] = unambiguous or list(codes[10])
    return picks


def _filler_codes() -> dict[int, list[str]]:
    """Unrelated codes: not in any group, and (ICD-10) not sharing a 3-character category with one."""
    icd9 = {c for codes in PHENOTYPE_CODES.values() for c in codes[9]}
    categories10 = {c[:3] for codes in PHENOTYPE_CODES.values() for c in codes[10]}
    return {
        9: [c for c in vocab.FILLER_ICD9 if c not in icd9],
        10: [c for c in vocab.FILLER_ICD10 if c[:3] not in categories10],
    }


def build_population(config: SyntheticConfig, rng: np.random.Generator) -> Population:
    version = config.mimic_version
    n_cohort = config.n_stays
    n_double = int(round(0.12 * n_cohort / 1.12)) if n_cohort >= 4 else 0
    n_cohort_subjects = n_cohort - n_double
    n_minor = max(2, round(0.01 * n_cohort))
    n_short = max(3, round(0.25 * n_cohort))
    n_donor = max(2, round(0.005 * n_cohort))
    kinds = (["cohort"] * n_cohort_subjects + ["under_18"] * n_minor + ["short_stay"] * n_short
             + ["organ_donor"] * n_donor)
    n_subjects = len(kinds)
    subject_kind = np.array(kinds, dtype=object)

    # ---- subjects ----------------------------------------------------------------------------
    demo = sample_demographics(rng, n_subjects, version)
    subject_ids = unique_ids(rng, n_subjects + config.n_encoder_subjects, 1)
    encoder_subject_ids = subject_ids[n_subjects:]
    subject_ids = subject_ids[:n_subjects]
    group_start = np.array([int(g[:4]) for g in demo["anchor_year_group"]])
    anchor_real_year = group_start + rng.integers(0, 3, n_subjects)
    anchor_year = rng.integers(2110, 2201, n_subjects)
    shift_years = anchor_year - anchor_real_year
    anchor_age_true = demo["true_age"].copy()
    minor = subject_kind == "under_18"
    anchor_age_true[minor] = rng.integers(16, 18, minor.sum())
    anchor_age = np.where(anchor_age_true > 89, 91, np.floor(anchor_age_true)).astype(np.int64)

    # ---- stays: one per subject, a second for n_double cohort subjects --------------------------
    double_subjects = rng.choice(n_cohort_subjects, size=n_double, replace=False)
    stay_subject = np.concatenate([np.arange(n_subjects), np.sort(double_subjects)])
    stay_order = np.concatenate([np.zeros(n_subjects, int), np.ones(n_double, int)])
    n_all = len(stay_subject)
    stay_kind = subject_kind[stay_subject]

    # first admission: within the anchor year group's real span (minors: in the anchor year itself)
    years_into_group = np.where(minor, 0, rng.integers(0, 3, n_subjects) - (anchor_real_year - group_start))
    years_into_group = np.clip(years_into_group, 0, None)
    first_year = anchor_year + years_into_group
    first_admit = year_start(first_year) + _minutes(rng.uniform(0, 340 * DAY, n_subjects)).astype("timedelta64[s]")

    # ---- latents: one mean per subject (age at the first stay) ---------------------------------
    age_first = anchor_age + (first_year - anchor_year)
    subj_mu = model.latent_means(age_first, demo["gender"] == "M", demo["race_group"], config.group_base_rates,
                                 config.age_sex_latents)
    mu = subj_mu[stay_subject]
    latents = mu + rng.multivariate_normal(np.zeros(len(model.LATENTS)), model.latent_covariance(), size=n_all)
    device = rng.random(n_all) < model.device_probability(latents)
    intercepts = reference_intercepts()
    mortality_weights = model.weight_vector(model.LABEL_MODELS[model.MORTALITY][1])
    death_prob = model.sigmoid(intercepts[model.MORTALITY] + latents @ mortality_weights)
    died = rng.random(n_all) < death_prob
    pheno_prob = np.column_stack([
        model.sigmoid(intercepts[name] + latents @ model.weight_vector(model.LABEL_MODELS[name][1]))
        for name in model.PHENOTYPE_LABELS
    ])
    pheno_true = rng.random(pheno_prob.shape) < pheno_prob

    # A stay that dies must be its subject's last: swap the rows of a (died, survived) pair.
    first_row = {s: k for k, s in enumerate(stay_subject) if stay_order[k] == 0}
    same_admission = np.zeros(n_all, bool)
    for k in np.flatnonzero(stay_order == 1):
        j = first_row[stay_subject[k]]
        if died[j] and not died[k]:
            for arr in (latents, device, died, pheno_true, pheno_prob, death_prob):
                arr[[j, k]] = arr[[k, j]]
        elif died[j] and died[k]:
            same_admission[k] = True

    # ---- stay times --------------------------------------------------------------------------
    severity = latents[:, model.L["severity"]]
    log_los_median = (np.log(50.0) + 0.25 * severity + 0.15 * latents[:, model.L["pulmonary"]]
                      + 0.1 * latents[:, model.L["infection"]])
    los_hours = 48.0 + np.minimum(np.exp(log_los_median + 0.85 * rng.standard_normal(n_all)), 38 * 24)
    short = stay_kind == "short_stay"
    los_hours[short] = rng.uniform(3.0, 47.5, short.sum())
    los_seconds = np.round(los_hours * HOUR).astype(np.int64)
    icu_delay = np.where(rng.random(n_all) < 0.6, rng.uniform(0.5, 24, n_all), rng.uniform(24, 6 * 24, n_all))
    icu_delay = _minutes(icu_delay * HOUR)
    in_icu_death = died & (rng.random(n_all) < 0.55)
    for k in np.flatnonzero(same_admission):
        in_icu_death[first_row[stay_subject[k]]] = False  # readmitted to the ICU in the same admission
    after_icu = np.where(
        died,
        np.where(in_icu_death, 0, rng.uniform(6 * HOUR, 12 * DAY, n_all)),
        np.exp(rng.normal(np.log(3 * DAY), 0.7, n_all)),
    ).astype(np.int64)
    death_offset = np.where(in_icu_death, rng.integers(-20 * 60, 60 * 60, n_all), 0)

    admittime = np.empty(n_all, "datetime64[s]")
    intime = np.empty(n_all, "datetime64[s]")
    outtime = np.empty(n_all, "datetime64[s]")
    dischtime = np.empty(n_all, "datetime64[s]")
    deathtime = np.full(n_all, np.datetime64("NaT"), "datetime64[s]")
    adm_key = np.arange(n_all)  # which stay's admission a stay belongs to
    order = np.argsort(stay_order, kind="stable")  # first stays before second stays
    for k in order:
        s = stay_subject[k]
        if stay_order[k] == 0:
            admittime[k] = first_admit[s]
            intime[k] = admittime[k] + np.timedelta64(int(icu_delay[k]), "s")
        else:
            j = first_row[s]
            if same_admission[k]:
                adm_key[k] = j
                admittime[k] = admittime[j]
                intime[k] = outtime[j] + np.timedelta64(int(_minutes(rng.uniform(12 * HOUR, 4 * DAY))), "s")
            else:
                admittime[k] = dischtime[j] + np.timedelta64(int(_minutes(rng.uniform(20 * DAY, 300 * DAY))), "s")
                intime[k] = admittime[k] + np.timedelta64(int(icu_delay[k]), "s")
        outtime[k] = intime[k] + np.timedelta64(int(los_seconds[k]), "s")
        if died[k] and in_icu_death[k]:
            death = outtime[k] + np.timedelta64(int(death_offset[k]), "s")
            if not short[k]:
                death = max(death, intime[k] + np.timedelta64(48 * HOUR + 60, "s"))
            deathtime[k] = death.astype("datetime64[m]").astype("datetime64[s]")
            typo_minutes = int(rng.integers(1, 30)) if rng.random() < 0.1 else 0
            dischtime[k] = deathtime[k] + np.timedelta64(60 * typo_minutes, "s")
        else:
            discharge = outtime[k] + np.timedelta64(int(after_icu[k]), "s")
            dischtime[k] = discharge.astype("datetime64[m]").astype("datetime64[s]")
            if died[k]:
                deathtime[k] = dischtime[k]
        if same_admission[k]:
            j = adm_key[k]
            dischtime[j], deathtime[j] = dischtime[k], deathtime[k]

    # organ donors: a pseudo-admission whose discharge precedes its admission
    donor = stay_kind == "organ_donor"
    dischtime[donor] = admittime[donor] - _minutes(rng.uniform(HOUR, DAY, donor.sum())).astype("timedelta64[s]")
    deathtime[donor] = dischtime[donor]
    died[donor] = True

    # ---- admissions --------------------------------------------------------------------------
    encoder = _encoder_subjects(rng, config, encoder_subject_ids)
    adm_rows = np.flatnonzero(adm_key == np.arange(n_all))
    hadm_pool = unique_ids(rng, len(adm_rows) + int(encoder["has_admission"].sum()), 2)
    hadm_of_row = dict(zip(adm_rows, hadm_pool[: len(adm_rows)]))
    hadm_id = np.array([hadm_of_row[adm_key[k]] for k in range(n_all)], dtype=np.int64)
    stay_id = unique_ids(rng, n_all, 3)
    n_adm = len(adm_rows)
    adm_subject = stay_subject[adm_rows]
    adm_type = _choice(rng, vocab.ADMISSION_TYPE_SHARES, n_adm)
    adm_loc = np.array(vocab.ADMISSION_LOCATIONS, dtype=object)[
        rng.choice(len(vocab.ADMISSION_LOCATIONS), n_adm, p=vocab.ADMISSION_LOCATION_SHARES)]
    adm_loc[np.isin(adm_type, ["EW EMER.", "EU OBSERVATION"]) & (rng.random(n_adm) < 0.85)] = "EMERGENCY ROOM"
    adm_loc[(adm_type == "SURGICAL SAME DAY ADMISSION") & (rng.random(n_adm) < 0.8)] = "PHYSICIAN REFERRAL"
    adm_died = np.array([bool(died[adm_key == r].any()) for r in adm_rows])
    disch_loc = _choice(rng, vocab.DISCHARGE_LOCATIONS_ALIVE, n_adm)
    disch_loc[adm_died] = "DIED"
    from_ed = adm_loc == "EMERGENCY ROOM"
    ed_reg = admittime[adm_rows] - _minutes(rng.uniform(HOUR, 10 * HOUR, n_adm)).astype("timedelta64[s]")
    ed_out = admittime[adm_rows] + _minutes(rng.uniform(0, 1.5 * HOUR, n_adm)).astype("timedelta64[s]")
    nat = np.datetime64("NaT")
    admissions = pd.DataFrame({
        "subject_id": subject_ids[adm_subject],
        "hadm_id": hadm_id[adm_rows],
        "admittime": admittime[adm_rows],
        "dischtime": dischtime[adm_rows],
        "deathtime": deathtime[adm_rows],
        "admission_type": adm_type,
        "admit_provider_id": provider_ids(rng, n_adm),
        "admission_location": adm_loc,
        "discharge_location": disch_loc,
        "insurance": demo["insurance"][adm_subject],
        "language": demo["language"][adm_subject],
        "marital_status": demo["marital_status"][adm_subject],
        "race": demo["race"][adm_subject],
        "edregtime": np.where(from_ed, ed_reg, nat),
        "edouttime": np.where(from_ed, ed_out, nat),
        "hospital_expire_flag": adm_died.astype(np.int64),
    })

    # ---- ICU stays -----------------------------------------------------------------------------
    units = _choice(rng, vocab.CAREUNITS, n_all)
    last_units = np.where(rng.random(n_all) < 0.93, units, _choice(rng, vocab.CAREUNITS, n_all))
    los_days = (outtime - intime).astype(np.int64) / DAY
    icustays = pd.DataFrame({
        "subject_id": subject_ids[stay_subject], "hadm_id": hadm_id, "stay_id": stay_id,
        "first_careunit": units, "last_careunit": last_units, "intime": intime, "outtime": outtime,
        "los": [repr(float(x)) for x in los_days],
    })

    # ---- patients (dod from the subject's last admission; out-of-hospital deaths within a year) -----
    last_disch = pd.Series(dischtime).groupby(stay_subject).max().to_numpy()
    subj_died_in_hosp = pd.Series(died).groupby(stay_subject).any().to_numpy()
    subj_deathtime = pd.Series(deathtime).groupby(stay_subject).max().to_numpy().astype("datetime64[s]")
    subj_severity = pd.Series(severity).groupby(stay_subject).max().to_numpy()
    later_death = ~subj_died_in_hosp & (rng.random(n_subjects) < model.sigmoid(-1.6 + 0.6 * subj_severity))
    dod = np.full(n_subjects, nat, "datetime64[s]")
    dod[subj_died_in_hosp] = subj_deathtime[subj_died_in_hosp]
    dod[later_death] = last_disch[later_death] + rng.integers(3, 365, later_death.sum()).astype("timedelta64[D]")
    patients = pd.DataFrame({
        "subject_id": subject_ids, "gender": demo["gender"], "anchor_age": anchor_age, "anchor_year": anchor_year,
        "anchor_year_group": demo["anchor_year_group"], "dod": dod.astype("datetime64[D]"),
    })

    # ---- diagnoses: observed codes = true phenotypes through (group-dependent) coding noise --------------
    race_groups = demo["race_group"][stay_subject]
    miss = np.zeros(n_all)
    false_code = np.zeros(n_all)
    if config.group_label_noise:
        for group, (m, f) in model.LABEL_NOISE_ON.items():
            miss[race_groups == group], false_code[race_groups == group] = m, f
    u = rng.random(pheno_true.shape)
    pheno_obs = np.where(pheno_true, u >= miss[:, None], u < false_code[:, None])
    real_year = year_of(admittime) - shift_years[stay_subject]
    icd_version = np.where((real_year > 2015) | ((real_year == 2015) & (month_of(admittime) >= 10)), 10, 9)
    diagnoses = _diagnoses(rng, hadm_id, subject_ids[stay_subject], icd_version, pheno_obs, adm_key)
    # the admission's codes define the labels prep sees: for a shared admission, the union
    for k in np.flatnonzero(adm_key != np.arange(n_all)):
        union = pheno_obs[k] | pheno_obs[adm_key[k]]
        pheno_obs[k] = pheno_obs[adm_key[k]] = union

    age = anchor_age[stay_subject] + (year_of(intime) - anchor_year[stay_subject])
    admission_len_ok = dischtime > admittime
    cohort = (age >= 18) & (los_seconds >= 48 * HOUR) & admission_len_ok
    stays = pd.DataFrame({
        "stay_id": stay_id, "subject_id": subject_ids[stay_subject], "hadm_id": hadm_id,
        "intime": intime, "outtime": outtime, "admittime": admittime, "dischtime": dischtime, "deathtime": deathtime,
        "cohort": cohort.astype(np.int64), "stay_kind": stay_kind, "age": age,
        "gender": demo["gender"][stay_subject], "race": demo["race"][stay_subject], "race_group": race_groups,
        "anchor_year_group": demo["anchor_year_group"][stay_subject], "icd_version": icd_version,
    })
    for k, name in enumerate(model.LATENTS):
        stays[f"latent_{name}"] = latents[:, k]
    stays["device"] = device.astype(np.int64)
    stays["mortality"] = admissions.set_index("hadm_id").loc[hadm_id, "hospital_expire_flag"].to_numpy()
    stays["mortality_true_draw"] = died.astype(np.int64)
    for k, name in enumerate(model.PHENOTYPE_LABELS):
        stays[f"pheno_{name}"] = pheno_obs[:, k].astype(np.int64)
        stays[f"pheno_true_{name}"] = pheno_true[:, k].astype(np.int64)
    stays["label_miss_rate"] = miss
    stays["label_false_rate"] = false_code
    if not (stays.loc[cohort, "mortality"].to_numpy() == died[cohort]).all():
        raise AssertionError("synthetic: admission death flag disagrees with the drawn outcome of a cohort stay")

    # ---- encoder subjects: MIMIC-CXR patients outside the ICU cohort --------------------------------
    enc_patients = pd.DataFrame({
        "subject_id": encoder["subject_id"], "gender": encoder["gender"], "anchor_age": encoder["anchor_age"],
        "anchor_year": encoder["anchor_year"], "anchor_year_group": encoder["anchor_year_group"],
        "dod": np.full(len(encoder), nat, "datetime64[D]"),
    })
    patients = pd.concat([patients, enc_patients], ignore_index=True).sort_values("subject_id", kind="stable")
    enc_adm = encoder[encoder["has_admission"]]
    if len(enc_adm):
        admissions = pd.concat([admissions, _encoder_admissions(rng, enc_adm, hadm_pool[len(adm_rows):])], ignore_index=True)
    admissions = admissions.sort_values(["subject_id", "admittime"], kind="stable").reset_index(drop=True)
    icustays = icustays.sort_values(["subject_id", "intime"], kind="stable").reset_index(drop=True)
    return Population(patients.reset_index(drop=True), admissions, icustays, diagnoses, stays, mu, intercepts, encoder)


def _diagnoses(rng, hadm_id, subject_id, icd_version, pheno_obs, adm_key) -> pd.DataFrame:
    picks = _pick_codes_by_version()
    fillers = _filler_codes()
    rows: dict[int, list[tuple[int, str, int]]] = {}
    for k in range(len(hadm_id)):
        version = int(icd_version[adm_key[k]])
        codes = [picks[version][name][rng.integers(len(picks[version][name]))]
                 for name, on in zip(model.PHENOTYPE_LABELS, pheno_obs[k]) if on]
        n_total = int(np.clip(np.exp(rng.normal(np.log(12), 0.45)), 3, 35))
        pool = fillers[version]
        n_fill = max(1, n_total - len(codes))
        codes += list(rng.choice(pool, size=min(n_fill, len(pool)), replace=False))
        key = int(adm_key[k])
        existing = rows.setdefault(key, [])
        seen = {c for _, c, _ in existing}
        existing.extend((int(subject_id[k]), c, version) for c in codes if c not in seen)
    out = []
    for key, entries in rows.items():
        entries = [entries[i] for i in rng.permutation(len(entries))]
        for seq, (subject, code, version) in enumerate(entries, start=1):
            out.append((subject, int(hadm_id[key]), seq, code, version))
    frame = pd.DataFrame(out, columns=vocab.DIAGNOSES_COLUMNS)
    frame["icd_code"] = frame["icd_code"].astype(object)
    return frame.sort_values(["subject_id", "hadm_id", "seq_num"], kind="stable").reset_index(drop=True)


def _encoder_subjects(rng: np.random.Generator, config: SyntheticConfig, ids: np.ndarray) -> pd.DataFrame:
    n = len(ids)
    demo = sample_demographics(rng, n, config.mimic_version)
    group = np.where(rng.random(n) < 0.5, "2011 - 2013", "2014 - 2016").astype(object)
    anchor_year = rng.integers(2110, 2201, n)
    anchor_age = np.where(demo["true_age"] > 89, 91, np.floor(demo["true_age"])).astype(np.int64)
    mu = model.latent_means(anchor_age, demo["gender"] == "M", demo["race_group"], config.group_base_rates,
                            config.age_sex_latents)
    latents = mu + rng.multivariate_normal(np.zeros(len(model.LATENTS)), model.latent_covariance(), size=n)
    # outpatients and ward patients are less often ventilated than ICU patients
    device = rng.random(n) < 0.6 * model.device_probability(latents)
    base = year_start(anchor_year) + _minutes(rng.uniform(0, 700 * DAY, n)).astype("timedelta64[s]")
    frame = pd.DataFrame({
        "subject_id": ids, "gender": demo["gender"], "anchor_age": anchor_age, "anchor_year": anchor_year,
        "anchor_year_group": group, "race": demo["race"], "race_group": demo["race_group"],
        "insurance": demo["insurance"], "language": demo["language"], "marital_status": demo["marital_status"],
        "base_time": base, "device": device, "has_admission": rng.random(n) < 0.5,
    })
    for k, name in enumerate(model.LATENTS):
        frame[f"latent_{name}"] = latents[:, k]
    return frame


def _encoder_admissions(rng: np.random.Generator, enc: pd.DataFrame, hadm_ids: np.ndarray) -> pd.DataFrame:
    n = len(enc)
    admit = enc["base_time"].to_numpy().astype("datetime64[s]") - np.timedelta64(6 * HOUR, "s")
    disch = admit + _minutes(rng.uniform(DAY, 8 * DAY, n)).astype("timedelta64[s]")
    nat = np.datetime64("NaT")
    return pd.DataFrame({
        "subject_id": enc["subject_id"].to_numpy(), "hadm_id": hadm_ids,
        "admittime": admit, "dischtime": disch, "deathtime": np.full(n, nat, "datetime64[s]"),
        "admission_type": _choice(rng, {"EW EMER.": 0.5, "URGENT": 0.2, "ELECTIVE": 0.2, "OBSERVATION ADMIT": 0.1}, n),
        "admit_provider_id": provider_ids(rng, n), "admission_location": np.full(n, "EMERGENCY ROOM", object),
        "discharge_location": _choice(rng, {"HOME": 0.6, "HOME HEALTH CARE": 0.3, "REHAB": 0.1}, n),
        "insurance": enc["insurance"].to_numpy(), "language": enc["language"].to_numpy(),
        "marital_status": enc["marital_status"].to_numpy(), "race": enc["race"].to_numpy(),
        "edregtime": np.full(n, nat, "datetime64[s]"), "edouttime": np.full(n, nat, "datetime64[s]"),
        "hospital_expire_flag": np.zeros(n, np.int64),
    })
