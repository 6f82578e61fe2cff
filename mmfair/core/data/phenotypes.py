"""The 25 CCS phenotype labels, matched on (icd_version, icd_code) of an admission's discharge codes.

ICD-10 modes (see the header of ``resources/phenotypes_ccs25.yaml``):

* ``exact``: a code matches a group only if it is listed there (MedFuse / CareBench behaviour);
* ``extended`` (default): additionally, an ICD-10 code matches a group when its 3-character category
  is the category of some listed ICD-10 code of exactly one group (a category shared by two groups
  extends neither).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd
import yaml

from mmfair.core.errors import ConfigError

PHENOTYPE_FILE = "phenotypes_ccs25.yaml"
ICD10_MODES = ("extended", "exact")
ERR_MODE = "icd10_mode {mode!r} is not one of " + ", ".join(ICD10_MODES)


@dataclass(frozen=True)
class Phenotype:
    slug: str
    name: str
    ccs_id: int
    type: str
    icd9: frozenset[str]
    icd10: frozenset[str]


def load_phenotypes() -> list[Phenotype]:
    """Read the packaged phenotype definitions, in file order (the order of the ``pheno_`` columns)."""
    text = (resources.files("mmfair.core.data") / "resources" / PHENOTYPE_FILE).read_text()
    data = yaml.safe_load(text)
    return [
        Phenotype(
            slug=slug,
            name=entry["name"],
            ccs_id=int(entry["ccs_id"]),
            type=entry["type"],
            icd9=frozenset(_normalise(c) for c in entry.get("icd9") or []),
            icd10=frozenset(_normalise(c) for c in entry.get("icd10") or []),
        )
        for slug, entry in data.items()
    ]


def _normalise(code: object) -> str:
    return str(code).strip().upper().replace(".", "")


class PhenotypeMatcher:
    """Look up which phenotype groups a diagnosis code belongs to.

    Parameters
    ----------
    phenotypes : list[Phenotype]
        The groups, in column order.
    icd10_mode : {"extended", "exact"}
        How ICD-10 codes match (module docstring).
    """

    def __init__(self, phenotypes: list[Phenotype], icd10_mode: str = "extended") -> None:
        if icd10_mode not in ICD10_MODES:
            raise ConfigError(ERR_MODE.format(mode=icd10_mode))
        self.phenotypes = phenotypes
        self.icd10_mode = icd10_mode
        self._exact: dict[tuple[int, str], set[int]] = defaultdict(set)
        for k, ph in enumerate(phenotypes):
            for code in ph.icd9:
                self._exact[(9, code)].add(k)
            for code in ph.icd10:
                self._exact[(10, code)].add(k)
        self._category = self._unique_icd10_categories() if icd10_mode == "extended" else {}

    def _unique_icd10_categories(self) -> dict[str, int]:
        owners: dict[str, set[int]] = defaultdict(set)
        for k, ph in enumerate(self.phenotypes):
            for code in ph.icd10:
                owners[code[:3]].add(k)
        return {cat: next(iter(ks)) for cat, ks in owners.items() if len(ks) == 1}

    @property
    def columns(self) -> list[str]:
        return [f"pheno_{ph.slug}" for ph in self.phenotypes]

    def groups_of(self, icd_version: int, icd_code: str) -> set[int]:
        """Indices of the groups that one code belongs to."""
        code = _normalise(icd_code)
        hits = set(self._exact.get((int(icd_version), code), ()))
        if int(icd_version) == 10 and code[:3] in self._category:
            hits.add(self._category[code[:3]])
        return hits

    def label_matrix(self, diagnoses: pd.DataFrame, hadm_ids: np.ndarray) -> np.ndarray:
        """0/1 labels ``[len(hadm_ids), n_groups]`` from rows with ``hadm_id, icd_code, icd_version``."""
        labels = np.zeros((len(hadm_ids), len(self.phenotypes)), dtype=np.int8)
        pairs = diagnoses[["hadm_id", "icd_version", "icd_code"]].drop_duplicates()
        codes = pairs[["icd_version", "icd_code"]].drop_duplicates()
        hits = [(v, c, k) for v, c in codes.itertuples(index=False) for k in self.groups_of(int(v), str(c))]
        if not hits:
            return labels
        hit_table = pd.DataFrame(hits, columns=["icd_version", "icd_code", "group"])
        matched = pairs.merge(hit_table, on=["icd_version", "icd_code"])
        rows = pd.Index(pd.Series(hadm_ids).astype("int64")).get_indexer(matched["hadm_id"].astype("int64"))
        keep = rows >= 0
        labels[rows[keep], matched["group"].to_numpy()[keep]] = 1
        return labels

    def prevalence_by_version(self, diagnoses: pd.DataFrame, labels: np.ndarray,
                              hadm_ids: np.ndarray) -> dict[str, dict[str, float | None]]:
        """Per-phenotype prevalence among admissions coded in ICD-9 and in ICD-10 (for prep.json)."""
        version_of = diagnoses.groupby("hadm_id")["icd_version"].max()
        versions = pd.Series(hadm_ids).map(version_of).to_numpy()
        out: dict[str, dict[str, float]] = {}
        for v in (9, 10):
            rows = versions == v
            out[f"icd{v}"] = {
                ph.slug: (round(float(labels[rows, k].mean()), 6) if rows.any() else None)
                for k, ph in enumerate(self.phenotypes)
            }
            out[f"icd{v}"]["n_admissions"] = int(rows.sum())
        return out


# "wildly": both versions coded in enough admissions, prevalences at least this far apart in absolute
# terms and by at least this factor (a zero against a non-zero counts as an infinite factor)
DISAGREE_MIN_ADMISSIONS = 100
DISAGREE_MIN_DIFFERENCE = 0.05
DISAGREE_MIN_RATIO = 2.0


def version_disagreements(prevalence: dict, min_admissions: int = DISAGREE_MIN_ADMISSIONS,
                          min_difference: float = DISAGREE_MIN_DIFFERENCE,
                          min_ratio: float = DISAGREE_MIN_RATIO) -> list[dict]:
    """Phenotypes whose prevalence among ICD-9 and ICD-10 coded admissions disagrees wildly.

    ``prevalence`` is :meth:`PhenotypeMatcher.prevalence_by_version`'s output. Returns
    ``[{"phenotype", "icd9", "icd10"}]`` in column order; empty when either version has fewer than
    ``min_admissions`` admissions (a real shift of case mix over the years also moves prevalences, so
    only large gaps are flagged: they usually mean an incomplete ICD-10 code list).
    """
    icd9, icd10 = prevalence.get("icd9", {}), prevalence.get("icd10", {})
    if min(icd9.get("n_admissions", 0), icd10.get("n_admissions", 0)) < min_admissions:
        return []
    out = []
    for slug, p9 in icd9.items():
        p10 = icd10.get(slug)
        if slug == "n_admissions" or p9 is None or p10 is None:
            continue
        low, high = sorted((float(p9), float(p10)))
        if high - low >= min_difference and (low == 0 or high / low >= min_ratio):
            out.append({"phenotype": slug, "icd9": float(p9), "icd10": float(p10)})
    return out
