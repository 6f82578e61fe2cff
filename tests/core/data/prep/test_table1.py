"""table1.csv: counts, age, categorical shares, label prevalences and the small-cell rule."""

import numpy as np
import pandas as pd
import pytest

from mmfair.core.data.phenotypes import version_disagreements
from mmfair.core.data.table1 import COLUMNS, build_table1


def make_cohort(n=60):
    def repeat(pairs):
        return [v for v, k in pairs for _ in range(k)]

    age = np.array([20 + (i * 7) % 70 for i in range(n)])
    return pd.DataFrame({
        "stay_id": np.arange(n) + 30000000,
        "subject_id": np.arange(n) // 2 * 2 + 10000000,            # 30 patients of two stays each
        "fold": np.arange(n) // 2 % 5,
        "has_cxr": [1] * 25 + [0] * 35,
        "gender": repeat([("F", 33), ("M", 27)]),
        "age": age,
        "age_group": pd.cut(age, [0, 40, 60, 80, 200], right=False, labels=["18-39", "40-59", "60-79", "80+"]
                            ).astype(str),
        "race_group": repeat([("WHITE", 40), ("BLACK", 12), ("ASIAN", 5), ("OTHER", 3)]),
        "insurance_group": repeat([("Medicare", 30), ("Medicaid", 21), ("Private", 9)]),
        "language_group": repeat([("English", 52), ("Other", 8)]),
        "los_class": np.arange(n) % 7,
        "mortality": [1] * 7 + [0] * (n - 7),
        "mortality_icu": [0] * n,
        "pheno_a": [1] * 55 + [0] * 5,
        "pheno_b": [1] * 20 + [0] * 40,
    })


@pytest.fixture(scope="module")
def table():
    return build_table1(make_cohort())


def cell(table, by, group, characteristic, level=""):
    t = table[(table["by"] == by) & (table["group"] == group) & (table["characteristic"] == characteristic)
              & (table["level"].fillna("") == level)]
    assert len(t) == 1, (by, group, characteristic, level)
    return t.iloc[0]


def test_columns_and_strata(table):
    assert list(table.columns) == COLUMNS
    assert table.groupby("by")["group"].unique().map(list).to_dict() == {
        "all": ["all"], "fold": ["0", "1", "2", "3", "4"], "has_cxr": ["0", "1"], "gender": ["F", "M"],
        "age_group": ["18-39", "40-59", "60-79", "80+"], "race_group": ["WHITE", "BLACK", "ASIAN", "OTHER"],
        "insurance_group": ["Medicare", "Medicaid", "Private"], "language_group": ["English", "Other"]}


def test_values_overall(table):
    cohort = make_cohort()
    assert cell(table, "all", "all", "stays")["count"] == 60 and cell(table, "all", "all", "patients")["count"] == 30
    age = cell(table, "all", "all", "age")
    assert age["mean"] == pytest.approx(round(cohort["age"].mean(), 2)) and age["sd"] == pytest.approx(
        round(cohort["age"].std(ddof=1), 2))
    female = cell(table, "all", "all", "gender", "F")
    assert (female["count"], female["percent"], female["suppressed"]) == (33, 55.0, 0)
    b = cell(table, "all", "all", "pheno_b", "1")
    assert (b["count"], b["percent"]) == (20, 33.3)
    assert cell(table, "all", "all", "mortality_icu", "1")["count"] == 0          # zeros are shown
    assert cell(table, "all", "all", "has_cxr", "1")["count"] == 25
    assert cell(table, "fold", "3", "stays")["count"] == 12


def test_small_cells_and_their_complements_are_suppressed(table):
    assert cell(table, "all", "all", "race_group", "ASIAN")["suppressed"] == 1       # 5
    assert cell(table, "all", "all", "race_group", "OTHER")["suppressed"] == 1       # 3
    assert cell(table, "all", "all", "race_group", "BLACK")["count"] == 12           # two hidden: enough
    assert cell(table, "all", "all", "mortality", "1")["suppressed"] == 1            # 7 deaths
    assert cell(table, "all", "all", "pheno_a", "1")["suppressed"] == 1              # 5 without it
    # insurance: Private (9) hidden, so the smallest other non-zero (Medicaid 21) is hidden too
    assert cell(table, "all", "all", "insurance_group", "Private")["suppressed"] == 1
    assert cell(table, "all", "all", "insurance_group", "Medicaid")["suppressed"] == 1
    assert cell(table, "all", "all", "insurance_group", "Medicare")["count"] == 30
    assert cell(table, "all", "all", "insurance_group", "Other")["count"] == 0
    # a group under 10 is hidden whole (size included); its only sibling goes with it
    for group in ("Other", "English"):
        rows = table[(table["by"] == "language_group") & (table["group"] == group)]
        assert rows["suppressed"].all() and rows["n_group"].isna().all() and rows["count"].isna().all()
    asian = table[(table["by"] == "race_group") & (table["group"] == "ASIAN")]
    assert asian["suppressed"].all() and asian["mean"].isna().all()
    assert cell(table, "race_group", "WHITE", "stays")["count"] == 40


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_small_count_is_visible_or_recoverable(seed):
    rng = np.random.default_rng(seed)
    cohort = pd.concat([make_cohort()] * 4, ignore_index=True)        # 240 stays
    cohort["subject_id"] = np.arange(240) + 10000000
    cohort["fold"] = np.arange(240) % 5
    for column in ("race_group", "insurance_group", "language_group", "gender", "has_cxr", "pheno_a", "pheno_b",
                   "los_class", "age_group"):
        cohort[column] = rng.permutation(cohort[column].to_numpy())
    cohort["mortality"] = (rng.random(240) < 0.08).astype(int)
    table = build_table1(cohort)
    shown = table[table["suppressed"] == 0]
    assert not ((shown["count"] > 0) & (shown["count"] < 10)).any()
    binary = shown["characteristic"].isin(["mortality", "mortality_icu", "has_cxr", "pheno_a", "pheno_b"])
    rest = shown.loc[binary, "n_group"] - shown.loc[binary, "count"]
    assert not ((rest > 0) & (rest < 10)).any()
    categorical = table["characteristic"].isin(["gender", "age_group", "race_group", "insurance_group",
                                                "language_group", "los_class"])
    within = table[categorical].groupby(["by", "group", "characteristic"])["suppressed"].sum()
    assert not (within == 1).any()
    across = table[table["by"] != "all"].groupby(["by", "characteristic", "level"], dropna=False)["suppressed"].sum()
    assert not (across == 1).any()


def test_table1_is_written_by_prep(prepped):
    table = pd.read_csv(prepped[0].data / "table1.csv", keep_default_na=False)
    assert list(table.columns) == COLUMNS
    assert (table["suppressed"] == 1).all()               # 9 stays: every cell is small
    assert set(table["by"]) == {"all", "fold", "has_cxr", "gender", "age_group", "race_group", "insurance_group",
                                "language_group"}


def test_version_disagreements():
    prevalence = {"icd9": {"a": 0.30, "b": 0.10, "c": 0.02, "d": 0.20, "n_admissions": 500},
                  "icd10": {"a": 0.28, "b": 0.0, "c": 0.0, "d": 0.05, "n_admissions": 400}}
    assert version_disagreements(prevalence) == [{"phenotype": "b", "icd9": 0.10, "icd10": 0.0},
                                                 {"phenotype": "d", "icd9": 0.20, "icd10": 0.05}]
    prevalence["icd10"]["n_admissions"] = 50                  # too few ICD-10 admissions to judge
    assert version_disagreements(prevalence) == []


def test_prep_json_records_prevalence_by_version(prepped):
    import json

    summary = json.loads((prepped[0].data / "prep.json").read_text())
    by_version = summary["phenotype_prevalence_by_icd_version"]
    # coded admissions of the cohort: ICD-9 20000001, 20000002; ICD-10 20000006, 20000007
    assert by_version["icd9"]["n_admissions"] == 2 and by_version["icd10"]["n_admissions"] == 2
    assert by_version["icd10"]["respiratory_failure"] == 0.5
    assert summary["phenotype_icd_version_disagreements"] == []


def test_reuse_writes_a_missing_table1(tree, tmp_path):
    from mmfair.core.config import PrepConfig
    from mmfair.core.data.prep import run_prep
    from mmfair.core.workspace import Workspace

    ws = Workspace.resolve(tmp_path / "ws")
    config = PrepConfig(mimic_root=tree[0], cxr_root=None, skip_encoder=True, workers=1)
    run_prep(config, ws)
    first = (ws.data / "table1.csv").read_text()
    (ws.data / "table1.csv").unlink()                      # a workspace from before table1.csv existed
    assert run_prep(config, ws).reused
    assert (ws.data / "table1.csv").read_text() == first
