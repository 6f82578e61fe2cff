"""The generating model: per-stay latent states, and how they drive labels and modality content.

What is planted, and why:

* Eight Gaussian latents per stay. Five are shown only by the EHR (``severity``: HR, BP, resp, GCS,
  pH, lactate; ``respiratory``: *true* arterial saturation, resp rate, FiO2; ``renal``: creatinine,
  urine output; ``glycaemic``: glucose; ``inflammation``: temperature, WBC). Three are shown only by the
  chest X-ray (``cardiac``: heart width; ``pulmonary``: edema haze and pleural effusion; ``infection``:
  patchy opacities). Modest correlations tie them (e.g. infection–inflammation), so each modality
  carries some of the other's information, as in real data.
* In-hospital mortality loads on EHR-only latents (severity, respiratory, renal) and CXR-only latents
  (pulmonary, infection, cardiac), so fusing both modalities beats either alone by a clear margin.
* The 25 phenotypes load on latents chosen so that some need the EHR (renal failure, diabetes, shock,
  respiratory failure), some the CXR (heart failure, pleurisy, pneumonia) and some both (septicemia,
  hypertension with complications). Intercepts are calibrated once, on a fixed reference population
  with every group switch off, to the prevalences of mimic_schema §6.1, so switching an effect on moves
  group base rates instead of re-centring everything.
* A ventilation/device flag follows respiratory and severity; it shows in both modalities (FiO2 and
  ``No Response-ETT`` in the EHR, an ET tube and lines in the CXR) and enters no label directly.
* Group effects (``group_base_rates``): shifted latent means for some race groups (renal and
  glycaemic burden for Black and Hispanic patients, higher severity for unknown race) — the direction of
  well-documented real disparities. Group label noise (``group_label_noise``): diagnosis codes are missed
  more often for some groups (under-coding), which caps any model's apparent accuracy there.
"""

from __future__ import annotations

import numpy as np

LATENTS = ("severity", "respiratory", "renal", "glycaemic", "inflammation", "cardiac", "pulmonary", "infection")
L = {name: k for k, name in enumerate(LATENTS)}
EHR_LATENTS = ("severity", "respiratory", "renal", "glycaemic", "inflammation")
CXR_LATENTS = ("cardiac", "pulmonary", "infection")

_CORRELATIONS = {
    ("severity", "respiratory"): 0.30,
    ("severity", "renal"): 0.25,
    ("severity", "inflammation"): 0.30,
    ("severity", "infection"): 0.10,
    ("inflammation", "infection"): 0.55,
    ("cardiac", "pulmonary"): 0.50,
    ("respiratory", "pulmonary"): 0.10,
    ("renal", "glycaemic"): 0.20,
    ("cardiac", "renal"): 0.15,
}


def latent_covariance() -> np.ndarray:
    cov = np.eye(len(LATENTS))
    for (a, b), rho in _CORRELATIONS.items():
        cov[L[a], L[b]] = cov[L[b], L[a]] = rho
    return cov


# Group shifts of latent means (only with group_base_rates on). Keys are DESIGN §3.1 race groups.
GROUP_LATENT_SHIFTS: dict[str, dict[str, float]] = {
    "BLACK": {"renal": 0.55, "glycaemic": 0.35, "cardiac": 0.20},
    "HISPANIC": {"glycaemic": 0.45, "renal": 0.15},
    "ASIAN": {"glycaemic": 0.20, "cardiac": -0.15},
    "UNKNOWN": {"severity": 0.35},
}

# Device (ventilation, lines): logistic in these latents.
DEVICE_INTERCEPT = -0.35
DEVICE_WEIGHTS = {"respiratory": 1.0, "severity": 0.6}

# label -> (target prevalence on the reference population, latent weights)
MORTALITY = "mortality"
LABEL_MODELS: dict[str, tuple[float, dict[str, float]]] = {
    MORTALITY: (0.135, {"severity": 1.0, "respiratory": 0.35, "renal": 0.25, "pulmonary": 0.85, "infection": 0.05,
                        "cardiac": 0.15}),
    "acute_renal_failure": (0.21, {"renal": 1.9, "severity": 0.5}),
    "acute_cerebrovascular_disease": (0.07, {"severity": 0.6}),
    "acute_myocardial_infarction": (0.10, {"cardiac": 0.9, "severity": 0.4}),
    "cardiac_dysrhythmias": (0.32, {"cardiac": 0.8, "severity": 0.2}),
    "chronic_kidney_disease": (0.13, {"renal": 1.6, "glycaemic": 0.3}),
    "copd_bronchiectasis": (0.13, {"respiratory": 0.9, "pulmonary": 0.3}),
    "surgical_complications": (0.21, {"severity": 0.3}),
    "conduction_disorders": (0.07, {"cardiac": 0.7}),
    "congestive_heart_failure": (0.27, {"cardiac": 1.4, "pulmonary": 1.3}),
    "coronary_atherosclerosis": (0.32, {"cardiac": 0.9, "glycaemic": 0.4}),
    "diabetes_with_complications": (0.09, {"glycaemic": 2.0, "renal": 0.7}),
    "diabetes_without_complication": (0.19, {"glycaemic": 1.7}),
    "lipid_disorders": (0.29, {"glycaemic": 0.5, "cardiac": 0.4}),
    "essential_hypertension": (0.42, {"cardiac": 0.4, "renal": 0.3}),
    "fluid_electrolyte_disorders": (0.27, {"renal": 0.8, "severity": 0.5}),
    "gastrointestinal_hemorrhage": (0.07, {"severity": 0.5}),
    "hypertension_with_complications": (0.13, {"renal": 1.2, "cardiac": 0.9}),
    "other_liver_diseases": (0.09, {"severity": 0.5}),
    "other_lower_respiratory": (0.05, {"pulmonary": 0.5, "infection": 0.5}),
    "other_upper_respiratory": (0.04, {"respiratory": 0.5}),
    "pleurisy_pneumothorax_collapse": (0.09, {"pulmonary": 1.7}),
    "pneumonia": (0.14, {"infection": 1.8, "inflammation": 0.6}),
    "respiratory_failure": (0.18, {"respiratory": 2.0, "pulmonary": 0.5, "severity": 0.4}),
    "septicemia": (0.14, {"inflammation": 1.3, "infection": 0.7, "severity": 0.7}),
    "shock": (0.08, {"severity": 1.7}),
}
PHENOTYPE_LABELS = [name for name in LABEL_MODELS if name != MORTALITY]

# Group label noise on diagnosis codes (phenotypes only; death is not noisy): (miss rate, false-code rate).
LABEL_NOISE_ON: dict[str, tuple[float, float]] = {
    "WHITE": (0.05, 0.01), "ASIAN": (0.08, 0.01), "OTHER": (0.10, 0.01), "UNKNOWN": (0.12, 0.01),
    "BLACK": (0.22, 0.01), "HISPANIC": (0.18, 0.01),
}


def weight_vector(weights: dict[str, float]) -> np.ndarray:
    vec = np.zeros(len(LATENTS))
    for name, w in weights.items():
        vec[L[name]] = w
    return vec


def latent_means(age: np.ndarray, male: np.ndarray, race_groups: np.ndarray, group_base_rates: bool,
                 age_sex: bool = True) -> np.ndarray:
    """Per-stay mean of the latent vector: age and sex effects behind ``age_sex`` (``age_sex_latents``, on by
    default and always on for the calibration reference); race-group shifts behind ``group_base_rates``."""
    mu = np.zeros((len(age), len(LATENTS)))
    if age_sex:
        centred_age = (np.asarray(age, dtype=float) - 65.0) / 17.0
        mu[:, L["severity"]] += 0.15 * centred_age
        mu[:, L["cardiac"]] += 0.45 * centred_age + 0.15 * male
        mu[:, L["renal"]] += 0.25 * centred_age
    if group_base_rates:
        for group, shifts in GROUP_LATENT_SHIFTS.items():
            rows = race_groups == group
            for name, delta in shifts.items():
                mu[rows, L[name]] += delta
    return mu


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def device_probability(latents: np.ndarray) -> np.ndarray:
    return sigmoid(DEVICE_INTERCEPT + latents @ weight_vector(DEVICE_WEIGHTS))


def calibrate_intercepts(reference_latents: np.ndarray) -> dict[str, float]:
    """Intercept per label so that the reference population hits the label's target prevalence."""
    intercepts = {}
    for label, (prevalence, weights) in LABEL_MODELS.items():
        score = reference_latents @ weight_vector(weights)
        lo, hi = -15.0, 15.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if sigmoid(mid + score).mean() > prevalence:
                hi = mid
            else:
                lo = mid
        intercepts[label] = 0.5 * (lo + hi)
    return intercepts
