"""``table1.csv``: cohort characteristics overall, by fold, by ``has_cxr`` and by each sensitive attribute.

One row per (stratification, group, characteristic, level), long format::

    by, group, n_group, characteristic, level, count, percent, mean, sd, suppressed

* ``by`` is ``all`` (group ``all``), ``fold``, ``has_cxr`` or a sensitive attribute (``gender``,
  ``age_group``, ``race_group``, ``insurance_group``, ``language_group``);
* characteristics: ``stays`` and ``patients`` (counts), ``age`` (mean and sd, count = stays), the
  categorical ``gender``, ``age_group``, ``race_group``, ``insurance_group``, ``language_group``,
  ``los_class`` (count and percent of the group's stays per level), and the binary labels
  ``has_cxr``, ``mortality``, ``mortality_icu`` and every ``pheno_<slug>`` (level ``1``: count and
  percent = prevalence).

Small cells (MIMIC's data use agreement; DESIGN §3.4's rule with ``min_cell`` = 10):

* a count between 1 and ``min_cell − 1`` is suppressed; for a binary label also when the number of
  stays *without* it is in that range (it would be recovered as ``n_group − count``);
* a group with fewer than ``min_cell`` stays has every cell suppressed, age mean and sd and
  ``n_group`` included; so has a group whose ``stays`` count is suppressed by the rule below;
* complementary suppression, repeated until nothing changes: where exactly one level of a
  categorical characteristic in a group is suppressed, the smallest other non-zero level is
  suppressed too (the levels add up to ``n_group``); where exactly one group of a stratification is
  suppressed for a (characteristic, level), the smallest other non-zero group is suppressed too (the
  groups add up to the ``all`` row). Zero counts are shown.

Suppressed cells leave ``count``, ``percent``, ``mean`` and ``sd`` empty and set ``suppressed`` to 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_CELL = 10
SENSITIVE_ATTRIBUTES = ("gender", "age_group", "race_group", "insurance_group", "language_group")
CATEGORICAL = ("gender", "age_group", "race_group", "insurance_group", "language_group", "los_class")
LEVEL_ORDER = {
    "gender": ["F", "M"],
    "age_group": ["18-39", "40-59", "60-79", "80+"],
    "race_group": ["WHITE", "BLACK", "HISPANIC", "ASIAN", "OTHER", "UNKNOWN"],
    "insurance_group": ["Medicare", "Medicaid", "Private", "Other"],
    "language_group": ["English", "Other"],
    "los_class": [str(k) for k in range(7)],
}
COLUMNS = ["by", "group", "n_group", "characteristic", "level", "count", "percent", "mean", "sd", "suppressed"]


def build_table1(cohort: pd.DataFrame, min_cell: int = MIN_CELL) -> pd.DataFrame:
    """The table described in the module docstring, from the rows of ``cohort.csv``."""
    binary = ["has_cxr", "mortality", "mortality_icu"] + [c for c in cohort.columns if c.startswith("pheno_")]
    strata: list[tuple[str, str, pd.DataFrame]] = [("all", "all", cohort)]
    for by in ("fold", "has_cxr", *SENSITIVE_ATTRIBUTES):
        values = cohort[by].astype(str)
        for group in _ordered_levels(by, values):
            strata.append((by, group, cohort[values == group]))
    rows = []
    for by, group, part in strata:
        rows.extend(_group_rows(by, group, part, binary))
    table = pd.DataFrame(rows, columns=["by", "group", "n_group", "characteristic", "level", "count", "mean",
                                        "sd", "binary"])
    suppressed = _suppress(table, min_cell)
    table["percent"] = np.where(table["n_group"] > 0, 100.0 * table["count"] / table["n_group"].clip(lower=1), np.nan)
    table.loc[table["characteristic"].isin(["stays", "patients", "age"]), "percent"] = np.nan
    table["percent"] = table["percent"].round(1)
    table[["mean", "sd"]] = table[["mean", "sd"]].round(2)
    table["count"] = table["count"].astype("Int64")
    table.loc[suppressed, ["count", "percent", "mean", "sd"]] = pd.NA
    hidden_size = suppressed & (table["characteristic"] == "stays")
    hidden_groups = set(zip(table.loc[hidden_size, "by"], table.loc[hidden_size, "group"]))
    table["n_group"] = table["n_group"].astype("Int64")
    table.loc[[(b, g) in hidden_groups for b, g in zip(table["by"], table["group"])], "n_group"] = pd.NA
    table["suppressed"] = suppressed.astype(int)
    return table[COLUMNS].reset_index(drop=True)


def _ordered_levels(column: str, values: pd.Series) -> list[str]:
    present = set(values.unique())
    known = [v for v in LEVEL_ORDER.get(column, []) if v in present]
    return known + sorted(present - set(known), key=_natural)


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def _group_rows(by: str, group: str, part: pd.DataFrame, binary: list[str]) -> list[tuple]:
    n = len(part)
    rows: list[tuple] = [(by, group, n, "stays", "", n, np.nan, np.nan, False),
                         (by, group, n, "patients", "", int(part["subject_id"].nunique()), np.nan, np.nan, False)]
    age = part["age"].astype(float)
    rows.append((by, group, n, "age", "", n, float(age.mean()) if n else np.nan,
                 float(age.std(ddof=1)) if n > 1 else np.nan, False))
    for column in CATEGORICAL:
        counts = part[column].astype(str).value_counts()
        levels = LEVEL_ORDER[column] + sorted(set(counts.index) - set(LEVEL_ORDER[column]), key=_natural)
        rows.extend((by, group, n, column, level, int(counts.get(level, 0)), np.nan, np.nan, False)
                    for level in levels)
    for column in binary:
        rows.append((by, group, n, column, "1", int((part[column].astype(int) == 1).sum()), np.nan, np.nan, True))
    return rows


def _suppress(table: pd.DataFrame, min_cell: int) -> pd.Series:
    count = table["count"].to_numpy(dtype=np.int64)
    n_group = table["n_group"].to_numpy(dtype=np.int64)
    binary = table["binary"].to_numpy(dtype=bool)

    def small(x: np.ndarray) -> np.ndarray:
        return (x > 0) & (x < min_cell)

    flag = small(count) | (binary & small(n_group - count)) | (n_group < min_cell)
    categorical = table["characteristic"].isin(CATEGORICAL).to_numpy()
    not_all = (table["by"] != "all").to_numpy()
    within = [idx for idx in table[categorical].groupby(["by", "group", "characteristic"]).indices.values()]
    within = [table.index[categorical][i] for i in within]
    across = [table.index[not_all][i] for i in
              table[not_all].groupby(["by", "characteristic", "level"]).indices.values()]
    groups = [np.asarray(idx) for idx in table.groupby(["by", "group"], sort=False).indices.values()]
    is_stays = (table["characteristic"] == "stays").to_numpy()
    for _ in range(50):
        before = flag.copy()
        for members in groups:          # a group whose size is hidden is hidden whole
            if flag[members[is_stays[members]]].any():
                flag[members] = True
        for members in (*within, *across):
            members = np.asarray(members)
            if flag[members].sum() == 1:
                candidates = members[~flag[members] & (count[members] > 0)]
                if len(candidates):
                    flag[candidates[np.argmin(count[candidates])]] = True
        if (flag == before).all():
            break
    return pd.Series(flag, index=table.index)
