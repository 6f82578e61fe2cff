"""cohort.csv and attrition.csv on the hand-written tree: the right answers are written here."""

import pandas as pd
import pytest

from mmfair.core.data.cohort import cohort_columns
from mmfair.core.data.phenotypes import load_phenotypes


@pytest.fixture(scope="module")
def cohort(prepped):
    ws = prepped[0]
    return pd.read_csv(ws.cohort_csv, dtype={"cxr_dicom_id": str}, keep_default_na=False)


def row(cohort, stay_id):
    return cohort.set_index("stay_id").loc[stay_id]


def test_rows_and_order(cohort, prepped):
    assert cohort["stay_id"].tolist() == [30000001, 30000002, 30000006, 30000007, 30000008, 30000009,
                                          30000010, 30000011, 30000012]
    assert prepped[1].n_stays == 9


def test_columns_in_contract_order(prepped):
    header = prepped[0].cohort_csv.read_text().splitlines()[0].split(",")
    phenos = [f"pheno_{p.slug}" for p in load_phenotypes()]
    assert len(phenos) == 25
    assert header == cohort_columns(phenos)
    assert header[:6] == ["stay_id", "subject_id", "hadm_id", "intime", "outtime", "fold"]
    assert header[-4:] == ["has_cxr", "cxr_dicom_id", "cxr_study_id", "cxr_time_hours"]


def test_text_formats(prepped):
    lines = prepped[0].cohort_csv.read_text().splitlines()
    first = lines[1].split(",")
    assert first[:5] == ["30000001", "10000001", "20000001", "2150-01-01 10:00:00", "2150-01-03 22:00:00"]
    no_cxr = lines[2]
    assert no_cxr.endswith(",0,,,")          # has_cxr 0, then three empty fields
    assert ",,DIRECT EMER.," in lines[3]     # empty marital status is an empty field
    assert lines[-1].startswith("30000012,10000011,20000012,2150-10-01 06:00:00,2150-10-03 10:48:00,")


def test_attrition(prepped):
    attrition = pd.read_csv(prepped[0].data / "attrition.csv")
    assert list(attrition.columns) == ["step", "kept", "removed", "removed_total"]
    assert attrition["kept"].tolist() == [12, 12, 12, 12, 11, 10, 10, 9]
    assert attrition["removed"].tolist() == [0, 0, 0, 0, 1, 1, 0, 1]
    assert attrition["removed_total"].tolist() == [0, 0, 0, 0, 1, 2, 2, 3]
    assert attrition["step"].tolist() == [
        "all ICU stays", "admission and patient records found", "ICU intime and outtime recorded",
        "ICU outtime not before intime", "age >= 18", "ICU stay >= 48 h", "admittime and dischtime recorded",
        "admission length > 0 (dischtime after admittime; organ-donor pseudo-admissions)"]
    pd.testing.assert_frame_equal(prepped[1].attrition, attrition)


@pytest.mark.parametrize("stay_id, age, age_group, race_group, insurance_group, language_group", [
    (30000001, 60, "60-79", "WHITE", "Medicare", "English"),      # WHITE - RUSSIAN
    (30000006, 37, "18-39", "BLACK", "Medicaid", "Other"),        # BLACK/CAPE VERDEAN, language '?'
    (30000007, 45, "40-59", "HISPANIC", "Other", "English"),      # HISPANIC/LATINO - CUBAN
    (30000008, 91, "80+", "ASIAN", "Medicare", "English"),        # anchor_age 91 stays 91
    (30000009, 80, "80+", "UNKNOWN", "Medicare", "English"),      # PATIENT DECLINED TO ANSWER, a year later
    (30000010, 40, "40-59", "WHITE", "Medicare", "English"),      # PORTUGUESE
    (30000011, 39, "18-39", "HISPANIC", "Other", "English"),      # SOUTH AMERICAN
    (30000012, 59, "40-59", "OTHER", "Other", "English"),         # AMERICAN INDIAN/ALASKA NATIVE
])
def test_demographic_groups(cohort, stay_id, age, age_group, race_group, insurance_group, language_group):
    r = row(cohort, stay_id)
    assert (r["age"], r["age_group"], r["race_group"]) == (age, age_group, race_group)
    assert (r["insurance_group"], r["language_group"]) == (insurance_group, language_group)


def test_raw_demographics_and_temporal_split(cohort):
    r = row(cohort, 30000006)
    assert (r["gender"], r["race"], r["insurance"], r["language"], r["marital_status"]) == (
        "M", "BLACK/CAPE VERDEAN", "Medicaid", "?", "")
    assert r["admission_type"] == "DIRECT EMER."
    splits = cohort.set_index("stay_id")["temporal_split"].to_dict()
    assert splits[30000001] == "train" and splits[30000006] == "test"
    assert splits[30000007] == "" and splits[30000008] == ""      # 2017 - 2019 and 2008 - 2010


def test_temporal_split_counts_in_prep_json(prepped):
    import json

    summary = json.loads((prepped[0].data / "prep.json").read_text())["temporal_split"]
    # estimated years: 30000001/2 2011, 30000009 2012 (a year after the anchor), 30000010 2011 -> train;
    # 30000006 2016, 30000011/12 2014 -> test; 30000007 2017 and 30000008 2010 -> neither
    assert summary["train"] == {"stays": 4, "patients": 3, "with_cxr": 1}
    assert summary["test"] == {"stays": 3, "patients": 3, "with_cxr": 1}
    assert summary["train_years"] == [2011, 2013] and summary["test_years"] == [2014, 2016]
    assert summary["outside_both_periods"] == 2 and summary["excluded_patient_has_test_stay"] == 0


def test_temporal_split_follows_each_stays_estimated_year():
    from mmfair.core.data.cohort import estimated_year, temporal_split

    stays = pd.DataFrame({
        "subject_id": [1, 1, 2, 2, 3, 4, 5, 6],
        "anchor_year_group": ["2011 - 2013", "2011 - 2013", "2011 - 2013", "2011 - 2013", "2014 - 2016",
                              "2008 - 2010", "", "2017 - 2019"],
        "anchor_year": [2150, 2150, 2150, 2150, 2100, 2150, 2150, 2150],
        "intime": pd.to_datetime(["2150-03-01", "2152-12-31", "2152-06-01", "2153-01-02", "2099-05-05",
                                  "2150-01-01", "2150-01-01", "2147-08-08"]),
    })
    assert estimated_year(stays).tolist()[:6] == [2011, 2013, 2013, 2014, 2013, 2008]
    assert estimated_year(stays).tolist()[7] == 2014 and pd.isna(estimated_year(stays)[6])
    split = temporal_split(stays, (2011, 2013), (2014, 2016)).tolist()
    # subject 2's 2013 stay leaves the training side: the patient has a test stay in 2014
    assert split == ["train", "train", "", "test", "train", "", "", "test"]


def test_overlapping_temporal_periods_are_refused(tree, tmp_path):
    from mmfair.core.config import PrepConfig
    from mmfair.core.data.prep import run_prep
    from mmfair.core.errors import ConfigError
    from mmfair.core.workspace import Workspace

    config = PrepConfig(mimic_root=tree[0], temporal_train_years=(2011, 2014), temporal_test_years=(2014, 2016))
    with pytest.raises(ConfigError, match="must not overlap"):
        run_prep(config, Workspace.resolve(tmp_path / "ws"))


@pytest.mark.parametrize("stay_id, mortality, mortality_icu, los_class", [
    (30000001, 0, 0, 0),      # 2.5 d
    (30000002, 1, 1, 3),      # died 2 h after outtime (within 6 h); 5.08 d
    (30000006, 1, 0, 2),      # died days after the ICU; 4.17 d
    (30000007, 0, 0, 6),      # 15 d
    (30000008, 0, 0, 0),      # exactly 48 h (kept)
    (30000009, 0, 0, 5),      # 7.5 d
    (30000010, 0, 0, 1),      # 3.0 d: left-closed
    (30000011, 0, 0, 4),      # 6.0 d
])
def test_outcome_labels(cohort, stay_id, mortality, mortality_icu, los_class):
    r = row(cohort, stay_id)
    assert (r["mortality"], r["mortality_icu"], r["los_class"]) == (mortality, mortality_icu, los_class)


def test_phenotypes(cohort):
    phenos = [c for c in cohort.columns if c.startswith("pheno_")]
    positives = {s: sorted(c[6:] for c in phenos if row(cohort, s)[c] == 1) for s in cohort["stay_id"]}
    assert positives[30000001] == ["acute_renal_failure", "essential_hypertension", "septicemia"]  # '0389'
    assert positives[30000002] == ["cardiac_dysrhythmias"]
    assert positives[30000006] == ["essential_hypertension", "respiratory_failure"]  # J9601 by category J96
    assert positives[30000007] == []             # '5849' marked ICD-10 matches nothing
    assert set(cohort[phenos].stack().unique()) <= {0, 1}


def test_exact_icd10_mode_drops_the_category_match(tmp_path, tree):
    from mmfair.core.config import PrepConfig
    from mmfair.core.data.prep import run_prep
    from mmfair.core.workspace import Workspace

    ws = Workspace.resolve(tmp_path / "ws")
    run_prep(PrepConfig(mimic_root=tree[0], cxr_root=None, icd10_mode="exact", skip_encoder=True), ws)
    cohort = pd.read_csv(ws.cohort_csv).set_index("stay_id")
    assert cohort.loc[30000006, "pheno_respiratory_failure"] == 0
    assert cohort.loc[30000006, "pheno_essential_hypertension"] == 1
    assert cohort["has_cxr"].sum() == 0


def test_folds_per_patient(cohort, prepped):
    assert cohort["fold"].between(0, 4).all()
    assert cohort.groupby("subject_id")["fold"].nunique().max() == 1
    import json
    summary = json.loads((prepped[0].data / "prep.json").read_text())
    assert summary["fold_seed"] == 0 and summary["n_folds"] == 5


def test_cxr_pairing(cohort, prepped):
    r = row(cohort, 30000001)
    # the AP at 2150-01-02 08:05:56 (StudyTime 80556.875) beats the earlier PA; lateral and late ones ignored
    assert r["has_cxr"] == 1
    assert r["cxr_dicom_id"] == "00000002-00000000-00000000-00000000-00000000"
    assert int(r["cxr_study_id"]) == 50000002
    assert float(r["cxr_time_hours"]) == pytest.approx(22 + 5 / 60 + 56 / 3600, abs=1e-4)
    tie = row(cohort, 30000006)   # two PAs at the same time: the greater dicom_id wins
    assert tie["cxr_dicom_id"] == "00000008-00000000-00000000-00000000-00000000"
    assert float(tie["cxr_time_hours"]) == pytest.approx(22 + 10 / 60 + 10 / 3600, abs=1e-4)
    assert row(cohort, 30000002)["has_cxr"] == 0 and row(cohort, 30000002)["cxr_dicom_id"] == ""
    assert prepped[1].n_with_cxr == 2
