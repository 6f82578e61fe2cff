"""The optional ``static`` modality: admission-time fields of ``cohort.csv``, from a packaged whitelist
(``data/resources/static_fields.yaml``: each field, when it is known, and why it is or is not a default).

``train --static`` adds the whitelist's default fields (age, admission type and location, first ICU);
sensitive attributes (gender, race, insurance, language, marital status) enter only when named with
``--static-field``. A field known only after the observation window (``post_window``) or a label column is
refused, as is any column the whitelist does not list.

Encoding, fitted per run fold on the training rows only (sklearn-style :class:`StaticEncoder`, saved in
``scaling.json``): numeric fields by the training median/IQR (a missing value becomes the median), categorical
fields one-hot over the training categories (an unseen category is all zeros). The encoded fields reach every
method as time-constant, always-observed EHR channels (see ``training/data.py``), so no method needs code of
its own for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

from mmfair.core.errors import ConfigError

MISSING_CATEGORY = "(missing)"


@dataclass(frozen=True)
class StaticField:
    name: str
    kind: str  # numeric | categorical
    default: bool
    sensitive: bool
    known_at: str
    why: str


@dataclass(frozen=True)
class StaticWhitelist:
    fields: dict[str, StaticField]
    post_window: frozenset[str]
    label_prefixes: tuple[str, ...]

    @property
    def defaults(self) -> tuple[str, ...]:
        return tuple(name for name, f in self.fields.items() if f.default)


@lru_cache(maxsize=1)
def load_whitelist() -> StaticWhitelist:
    text = (resources.files("mmfair.core.data") / "resources" / "static_fields.yaml").read_text()
    raw = yaml.safe_load(text)
    fields = {
        name: StaticField(name, str(spec["kind"]), bool(spec.get("default", False)), bool(spec.get("sensitive", False)),
                          str(spec.get("known_at", "")), " ".join(str(spec.get("why", "")).split()))
        for name, spec in raw["fields"].items()
    }
    return StaticWhitelist(fields, frozenset(raw.get("post_window", [])), tuple(raw.get("label_prefixes", [])))


def check_static_fields(names: Iterable[str]) -> tuple[str, ...]:
    """The fields in whitelist order, each checked: never a post-window or label column, never an unlisted one."""
    whitelist = load_whitelist()
    names = list(dict.fromkeys(names))
    for name in names:
        if name in whitelist.post_window or name.startswith(whitelist.label_prefixes):
            raise ConfigError(f"static field '{name}' is known only after the observation window (or is a label); "
                              "using it as an input would look ahead")
        if name not in whitelist.fields:
            raise ConfigError(f"static field '{name}' is not in the whitelist "
                              f"(mmfair/core/data/resources/static_fields.yaml): {', '.join(whitelist.fields)}")
    order = list(whitelist.fields)
    return tuple(sorted(names, key=order.index))


class StaticEncoder:
    """Numeric fields by training median/IQR, categorical ones one-hot over the training categories."""

    def __init__(self, fields: Iterable[str]) -> None:
        self.fields = tuple(fields)

    def fit(self, cohort: pd.DataFrame) -> "StaticEncoder":
        whitelist = load_whitelist()
        self.numeric_: dict[str, tuple[float, float]] = {}
        self.categories_: dict[str, list[str]] = {}
        for name in self.fields:
            if name not in cohort.columns:
                raise ConfigError(f"cohort.csv has no column '{name}' for the static modality (written by an older "
                                  "mmfair? rerun `mmfair prep` in a new workspace)")
            if whitelist.fields[name].kind == "numeric":
                values = pd.to_numeric(cohort[name], errors="coerce").to_numpy(dtype=float)
                values = values[np.isfinite(values)]
                if values.size == 0:
                    raise ConfigError(f"static field '{name}': no numeric value in the training stays")
                q25, q50, q75 = np.percentile(values, [25, 50, 75])
                self.numeric_[name] = (float(q50), float(q75 - q25) if q75 > q25 else 1.0)
            else:
                self.categories_[name] = sorted(set(_categories(cohort[name])))
        self.feature_names_ = [f"static:{name}" if name in self.numeric_ else f"static:{name}={c}"
                               for name in self.fields for c in (self.categories_.get(name) or [None])]
        return self

    @property
    def width_(self) -> int:
        return len(self.feature_names_)

    def transform(self, cohort: pd.DataFrame) -> np.ndarray:
        columns = []
        for name in self.fields:
            if name in self.numeric_:
                median, iqr = self.numeric_[name]
                values = pd.to_numeric(cohort[name], errors="coerce").to_numpy(dtype=float)
                columns.append(((np.where(np.isfinite(values), values, median) - median) / iqr)[:, None])
            else:
                values = _categories(cohort[name])
                columns.append((values[:, None] == np.array(self.categories_[name], dtype=object)[None, :]).astype(float))
        if not columns:
            return np.zeros((len(cohort), 0), dtype=np.float32)
        return np.concatenate(columns, axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"fields": list(self.fields), "numeric": {k: list(v) for k, v in self.numeric_.items()},
                "categories": self.categories_, "feature_names": self.feature_names_,
                "rule": "numeric: (x - training median) / training IQR, missing = median; categorical: one-hot "
                        "over the training categories, unseen = all zeros"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StaticEncoder":
        encoder = cls(d["fields"])
        encoder.numeric_ = {k: (float(v[0]), float(v[1])) for k, v in d["numeric"].items()}
        encoder.categories_ = {k: list(v) for k, v in d["categories"].items()}
        encoder.feature_names_ = list(d["feature_names"])
        return encoder


def _categories(values: pd.Series) -> np.ndarray:
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    return text.where(text != "", MISSING_CATEGORY).to_numpy(dtype=object)
