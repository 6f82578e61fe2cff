"""MIMIC-IV versions, layouts and quirks: the v3.1 flavour of the hand-written tree, version detection,
v1.0 refusal, an EHR-only cohort, and the extended variable map. Right answers are written here."""

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from mimic_tree import build_tree, dicom
from mmfair.core.config import PrepConfig
from mmfair.core.data.prep import run_prep
from mmfair.core.data.store import open_store
from mmfair.core.errors import InputFileError
from mmfair.core.workspace import Workspace


def prep(mimic, cxr, ws_dir, **options):
    ws = Workspace.resolve(ws_dir)
    result = run_prep(PrepConfig(mimic_root=mimic, cxr_root=cxr, skip_encoder=True, workers=1, **options), ws)
    cohort = pd.read_csv(ws.cohort_csv, dtype={"cxr_dicom_id": str}, keep_default_na=False).set_index("stay_id")
    return ws, result, cohort


@pytest.fixture(scope="module")
def v31(tmp_path_factory):
    root = tmp_path_factory.mktemp("v31")
    mimic, cxr = build_tree(root / "src", version="3.1")
    return (*prep(mimic, cxr, root / "ws"), mimic, cxr)


def test_v31_is_detected_and_labelled(v31):
    ws, result, cohort, mimic, _ = v31
    assert mimic.name == "3.1" and (mimic / "hosp" / "admissions.csv").is_file()     # plain .csv
    summary = json.loads((ws.data / "prep.json").read_text())
    assert summary["mimic_version"] == "3.1" and result.source == "mimic-iv-3.1"
    assert result.n_stays == 9 and cohort.index.tolist()[:3] == [30000001, 30000002, 30000006]


@pytest.mark.parametrize("stay_id, insurance, insurance_group, language, language_group", [
    (30000001, "Medicare", "Medicare", "English", "English"),
    (30000006, "Medicaid", "Medicaid", "Spanish", "Other"),
    (30000007, "Private", "Private", "English", "English"),
    (30000008, "Medicare", "Medicare", "Chinese", "Other"),
    (30000010, "No charge", "Other", "Portuguese", "Other"),
    (30000011, "", "Other", "English", "English"),          # blank insurance
    (30000012, "Other", "Other", "", "Other"),              # blank language
])
def test_v31_demographics(v31, stay_id, insurance, insurance_group, language, language_group):
    r = v31[2].loc[stay_id]
    assert (r["insurance"], r["insurance_group"], r["language"], r["language_group"]) == (
        insurance, insurance_group, language, language_group)


def test_v31_same_cohort_labels_as_v22(v31, prepped):
    v22 = pd.read_csv(prepped[0].cohort_csv, keep_default_na=False).set_index("stay_id")
    cohort = v31[2]
    same = ["subject_id", "hadm_id", "intime", "outtime", "age", "race_group", "mortality", "mortality_icu",
            "los_class"] + [c for c in v22.columns if c.startswith("pheno_")]
    pd.testing.assert_frame_equal(cohort[same], v22[same], check_dtype=False)


def test_v31_odd_images_are_paired_and_decoded(v31):
    ws, result, cohort, _, _ = v31
    assert result.n_with_cxr == 4
    assert cohort.loc[30000007, "cxr_dicom_id"] == dicom(30)
    assert float(cohort.loc[30000007, "cxr_time_hours"]) == pytest.approx(3.5)
    assert cohort.loc[30000008, "cxr_dicom_id"] == dicom(31)
    assert float(cohort.loc[30000008, "cxr_time_hours"]) == pytest.approx(23.5)        # '53000.1' = 05:30:00
    with open_store(ws.features_h5, ws.cohort_csv) as f:
        rows = f["cxr/row"][:].tolist()
        images = f["cxr/images"][:]
    assert rows == [0, -1, 1, 2, 3, -1, -1, -1, -1]
    rgb, deep = images[2], images[3]
    # RGB 37 x 91: gray 118.5, height -> 256, width round(37 * 256 / 91) = 104, centred (cols 76..179)
    assert abs(int(rgb[128, 128]) - 118) <= 3 and rgb[128, 70] == 0 and rgb[128, 185] == 0
    # 16-bit 80 x 60: full range stretched (1000 -> 0, 3000 -> 255); width -> 256, height 192 (rows 32..223)
    assert deep[128, 20] <= 3 and deep[128, 236] >= 252 and deep[16, 236] == 0


@pytest.mark.parametrize("folder, expected", [("2.2", "3.1"), ("data", "3.1"), ("3.0", "3.0")])
def test_version_comes_from_the_values(tmp_path, folder, expected, caplog):
    mimic, _ = build_tree(tmp_path / "src", version="3.1")
    moved = mimic.parent / folder
    mimic.rename(moved)
    with caplog.at_level(logging.WARNING, logger="mmfair.core.data.mimic"):
        _, result, _ = prep(moved, None, tmp_path / "ws")
    assert result.source == f"mimic-iv-{expected}"
    assert ("named 2.2" in caplog.text) == (folder == "2.2")


def test_v22_values_in_an_unnamed_folder(tmp_path):
    mimic, _ = build_tree(tmp_path / "src")
    moved = tmp_path / "my-download"
    shutil.move(str(mimic), moved)
    _, result, _ = prep(moved, None, tmp_path / "ws")
    assert result.source == "mimic-iv-2.2"


def test_mimic_version_option_forces_it(tmp_path):
    mimic, _ = build_tree(tmp_path / "src")
    _, result, _ = prep(mimic, None, tmp_path / "ws", mimic_version="3.1")
    assert result.source == "mimic-iv-3.1"


def test_v1_core_folder_is_refused(tmp_path):
    mimic, _ = build_tree(tmp_path / "src")
    (mimic / "core").mkdir()
    with pytest.raises(InputFileError, match=r"core/ folder: this is MIMIC-IV v1\.0"):
        prep(mimic, None, tmp_path / "ws")
    with pytest.raises(InputFileError, match=r"v1\.0"):      # the parent folder too
        prep(mimic.parent, None, tmp_path / "ws")


def test_no_cxr_root_gives_an_ehr_only_cohort_with_a_notice(tmp_path, caplog):
    mimic, _ = build_tree(tmp_path / "src")
    with caplog.at_level(logging.WARNING, logger="mmfair.core.data.prep"):
        ws, result, cohort = prep(mimic, None, tmp_path / "ws")
    assert "EHR-only cohort" in caplog.text
    assert result.n_with_cxr == 0 and (cohort["has_cxr"] == 0).all() and (cohort["cxr_dicom_id"] == "").all()
    with open_store(ws.features_h5, ws.cohort_csv) as f:
        assert f["cxr/images"].shape[0] == 0 and (f["cxr/row"][:] == -1).all()


def test_only_needed_files_and_columns_are_required(tmp_path):
    mimic, cxr = build_tree(tmp_path / "src")
    (mimic / "icu" / "outputevents.csv.gz").unlink()          # only the extended map reads it
    (tmp_path / "src" / "mimic-cxr-jpg" / "2.0.0" / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()  # encoder only
    import gzip
    path = mimic / "hosp" / "patients.csv.gz"
    with gzip.open(path, "rt") as fh:                         # dod (a date) is not used: drop the column
        rows = [line.rsplit(",", 1)[0] for line in fh.read().splitlines()]
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    _, result, cohort = prep(mimic, cxr, tmp_path / "ws")
    assert result.n_stays == 9 and result.n_with_cxr == 2
    # mortality comes from hospital_expire_flag, never from the date-only dod
    assert cohort.loc[30000006, "mortality"] == 1 and cohort.loc[30000001, "mortality"] == 0
    with pytest.raises(InputFileError, match=r"icu/outputevents\.csv\.gz: required table not found"):
        prep(mimic, cxr, tmp_path / "ws2", variables="extended")


def test_rare_and_blank_view_positions_are_not_frontal(prepped):
    cohort = pd.read_csv(prepped[0].cohort_csv, dtype={"cxr_dicom_id": str}, keep_default_na=False)
    paired = set(cohort["cxr_dicom_id"]) - {""}
    # blank, AP AXIAL, PA LLD, AP LLD, LL, SWIMMERS, XTABLE LATERAL come later in 30000001's window
    assert paired == {dicom(2), dicom(8)}
    assert not paired & {dicom(n) for n in range(9, 16)}


# ------------------------------------------------------------------------------------- extended map

@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    root = tmp_path_factory.mktemp("extended")
    mimic, cxr = build_tree(root / "src")
    ws, result, _ = prep(mimic, None, root / "ws", variables="extended")
    with open_store(ws.features_h5, ws.cohort_csv) as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["ehr/feature_names"][:]]
        groups = [g.decode() if isinstance(g, bytes) else g for g in f["ehr/feature_groups"][:]]
        values = f["ehr/values"][:]
    return ws, names, groups, values


def test_extended_map_layout(extended):
    _, names, groups, values = extended
    assert len(names) == 29 and names[17] == "sao2"
    assert names[18:] == ["creatinine", "bun", "lactate", "wbc", "hemoglobin", "platelets", "sodium", "potassium",
                          "bicarbonate", "bilirubin", "urine_output"]
    assert groups[18:28] == ["labs"] * 10 and groups[28] == "output"
    assert values.shape == (9, 48, 29)


def test_extended_labs(extended):
    _, names, _, values = extended
    got = {n: float(values[0, 5, names.index(n)]) for n in names[18:28]}
    assert got == pytest.approx({"creatinine": 1.4, "bun": 22, "lactate": 2.1, "wbc": 11.5, "hemoglobin": 9.8,
                                 "platelets": 210, "sodium": 135, "potassium": 4.1, "bicarbonate": 24,
                                 "bilirubin": 0.8})
    assert np.isnan(values[0, 6, names.index("creatinine")])            # 400 mg/dL: out of range
    assert float(values[0, 2, names.index("glucose")]) == 180           # the standard channels are unchanged


def test_hourly_urine_output(extended):
    ws, names, _, values = extended
    urine = values[0, :, names.index("urine_output")]
    assert urine[:4].tolist() == [150, 250, 40, 60]       # 100+50; 200-30+80 (irrigant in negative); 40; 60
    assert np.isnan(urine[4:]).all()                      # chest tube is not urine; no volume charted -> NaN
    assert np.isnan(values[1:, :, names.index("urine_output")]).all()
    coverage = pd.read_csv(ws.data / "variable_coverage.csv")
    assert len(coverage) == 29 * 48
    oor = coverage[coverage["out_of_range"] > 0].set_index(["variable", "hour"])["out_of_range"].to_dict()
    assert oor == {("temperature", 5): 1, ("temperature", 6): 1, ("creatinine", 6): 1, ("urine_output", 2): 1}


def test_duckdb_can_spill_under_a_fresh_workspace(tmp_path):
    from mmfair.core.data.mimic import connect

    spill = tmp_path / "ws" / "data" / ".prep-duckdb-spill"      # data/ does not exist yet
    con = connect("30MB", 1, spill)
    try:
        n = con.execute("SELECT count(*) FROM (SELECT i, random() AS r FROM range(3000000) t(i) ORDER BY r)").fetchone()
    finally:
        con.close()
    assert n == (3000000,)
