"""The real-data sanity card: the prepped cohort beside the figures published for MedFuse/CareBench-style cohorts.

``prep`` prints it and logs a warning for every quantity far outside its reference range, so a mapping
error (a wrong label column, a join that drops most CXRs, an ICD-10 list that matches nothing) shows up
before anyone trains. Quantities: cohort size, in-hospital mortality, the share of stays with a paired CXR,
and the prevalence of each of the 25 phenotypes.

Where the reference numbers come from (nothing here is invented; each row names its source and confidence
tag as the reference note states it — [V] verified in a primary or code source, [G] recalled or approximate):

* ``/work/shared/reference/mimic_schema.md`` §5.1 (MedFuse, Hayat et al., MLHC 2022): EHR-only in-hospital
  mortality set about 18.8k / 2.1k / 5.2k stays [G]; about 18 % of the phenotyping and 24 % of the
  in-hospital mortality stays have a qualifying AP CXR [G]; §6.1: 76,943 ICU stays in MIMIC-IV v2.0 [V],
  in-hospital mortality 11.7 % of all ICU stays [V] and about 13–15 % in the cohort of stays of 48 h or more
  [G], ICU stays with any CXR during the stay about 25–35 % [G]; phenotype prevalence bands of the MIMIC-III
  benchmark (Harutyunyan et al., Sci. Data 2019) [G].
* ``carebench.md`` and ``anchors_tier2.md`` state no prevalence or pairing figures for these cohorts
  (CareBench's cohort notebook is not public; YAIB's 71,962 MIMIC-IV v2.2 stays use other exclusions), so
  they supply none here.

Deviations: the references are for MIMIC-IV v1.0/v2.0 (MedFuse, tableone) and MIMIC-III (phenotypes), not
per MIMIC version; the card says which version each reference is about and which version was prepped.
mmfair pairs any frontal view (AP or PA) in the first 48 h, MedFuse AP only, so mmfair's share may sit above
MedFuse's. "Far outside" is a factor of 2 beyond the range (below low / 2 or above 2 × high): a sanity check
for gross errors, not a test of agreement.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmfair.core.workspace import Workspace

log = logging.getLogger(__name__)

FAR = 2.0  # "far outside": beyond a factor of FAR of the range's ends

_SCHEMA = "mimic_schema.md"
_PHENO_SOURCE = f"MIMIC-III benchmark prevalence band ({_SCHEMA} §6.1) [G]"


@dataclass(frozen=True)
class Reference:
    quantity: str
    low: float
    high: float
    source: str
    about: str  # the MIMIC version / cohort the figure is about


#: Cohort-level references (see the module docstring for each source).
COHORT_REFERENCES = (
    Reference("cohort stays", 26_100, 76_943, f"MedFuse EHR-only mortality set ≈ 18.8k + 2.1k + 5.2k [G] to all "
              f"76,943 ICU stays [V] ({_SCHEMA} §5.1, §6.1)", "MIMIC-IV v1.0 (MedFuse), v2.0 (all stays)"),
    Reference("in-hospital mortality", 0.117, 0.15, f"11.7 % of all ICU stays [V]; ~13–15 % of stays ≥ 48 h [G] "
              f"({_SCHEMA} §6.1)", "MIMIC-IV v2.0"),
    Reference("stays with a paired CXR", 0.18, 0.35, f"MedFuse AP-only pairing 18–24 % [G]; any CXR during the stay "
              f"25–35 % [G] ({_SCHEMA} §5.1, §6.1)", "MIMIC-IV v1.0 (MedFuse)"),
)  # fmt: skip

#: Phenotype prevalence bands of the MIMIC-III benchmark, per cohort slug (low, high).
PHENOTYPE_BANDS: dict[str, tuple[float, float]] = {
    "essential_hypertension": (0.35, 0.42),
    **{s: (0.25, 0.35) for s in ("cardiac_dysrhythmias", "coronary_atherosclerosis", "lipid_disorders",
                                 "congestive_heart_failure", "fluid_electrolyte_disorders")},
    **{s: (0.15, 0.25) for s in ("acute_renal_failure", "surgical_complications", "diabetes_without_complication",
                                 "respiratory_failure")},
    **{s: (0.10, 0.15) for s in ("septicemia", "pneumonia", "hypertension_with_complications",
                                 "chronic_kidney_disease", "copd_bronchiectasis", "acute_myocardial_infarction")},
    **{s: (0.05, 0.10) for s in ("diabetes_with_complications", "other_liver_diseases",
                                 "pleurisy_pneumothorax_collapse", "shock", "acute_cerebrovascular_disease",
                                 "gastrointestinal_hemorrhage", "conduction_disorders", "other_lower_respiratory")},
    "other_upper_respiratory": (0.04, 0.04),
}  # fmt: skip


def status(value: float, low: float, high: float) -> str:
    """``within``, ``outside`` (beyond the range) or ``far outside`` (beyond a factor of :data:`FAR`)."""
    if not np.isfinite(value):
        return "n/a"
    if value < low / FAR or value > high * FAR:
        return "far outside"
    return "within" if low <= value <= high else "outside"


def _fmt(x: float, share: bool) -> str:
    return f"{x:.1%}" if share else f"{x:,.0f}"


def _row(ref: Reference, value: float, share: bool) -> dict:
    ranged = _fmt(ref.low, share) if ref.low == ref.high else f"{_fmt(ref.low, share)} – {_fmt(ref.high, share)}"
    return {"quantity": ref.quantity, "value": _fmt(value, share), "reference": ranged,
            "status": status(value, ref.low, ref.high), "source": ref.source, "about": ref.about}  # fmt: skip


def sanity_card(cohort: pd.DataFrame) -> pd.DataFrame:
    """One row per quantity: the cohort's value, the reference range, ``status`` and the reference's source."""
    values = {
        "cohort stays": (float(len(cohort)), False),
        "in-hospital mortality": (float(cohort["mortality"].mean()) if "mortality" in cohort else np.nan, True),
        "stays with a paired CXR": (float(cohort["has_cxr"].mean()) if "has_cxr" in cohort else np.nan, True),
    }
    rows = [_row(ref, *values[ref.quantity]) for ref in COHORT_REFERENCES]
    for slug, (low, high) in PHENOTYPE_BANDS.items():
        col = f"pheno_{slug}"
        value = float(cohort[col].mean()) if col in cohort else np.nan
        rows.append(_row(Reference(f"phenotype {slug}", low, high, _PHENO_SOURCE, "MIMIC-III"), value, True))
    return pd.DataFrame(rows)


def card_warnings(card: pd.DataFrame, source: str = "") -> list[str]:
    """One line per quantity far outside its reference (none for the synthetic source, whose size and rates are
    the generator's settings, not a mapping of MIMIC)."""
    if source.startswith("synthetic"):
        return []
    far = card[card["status"] == "far outside"]
    return [f"sanity card: {r.quantity} is {r.value}, far outside the published {r.reference} ({r.source}); check "
            "the mapping before training" for r in far.itertuples()]  # fmt: skip


def workspace_card(ws: Workspace) -> tuple[pd.DataFrame, str, str]:
    """``(card, mimic_version, source)`` of a prepped workspace (``data/cohort.csv`` and ``data/prep.json``)."""
    cols = lambda c: c in ("mortality", "has_cxr") or c.startswith("pheno_")  # noqa: E731
    cohort = pd.read_csv(ws.cohort_csv, usecols=cols)
    prep = json.loads((ws.data / "prep.json").read_text()) if (ws.data / "prep.json").is_file() else {}
    return sanity_card(cohort), str(prep.get("mimic_version") or "unknown"), str(prep.get("source") or "")


def warn_outliers(ws: Workspace) -> list[str]:
    """Log (and return) :func:`card_warnings` for the workspace; prep calls this once its outputs are in place."""
    card, version, source = workspace_card(ws)
    lines = card_warnings(card, source)
    for line in lines:
        log.warning("%s (prepped MIMIC version %s)", line, version)
    return lines
