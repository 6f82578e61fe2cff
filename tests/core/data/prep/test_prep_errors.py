"""Bad input: one clear error naming the file, column and value, and nothing half-written."""

import gzip

import pytest
from pydantic import ValidationError

from mimic_tree import dicom, image_path
from mmfair.core.config import PrepConfig
from mmfair.core.data.prep import run_prep
from mmfair.core.errors import ConfigError, InputFileError
from mmfair.core.workspace import Workspace


def config_for(tree, **overrides):
    return PrepConfig(mimic_root=tree[0], cxr_root=tree[1], skip_encoder=True, workers=1, **overrides)


def rewrite_gz(path, edit):
    with gzip.open(path, "rt") as fh:
        text = fh.read()
    with gzip.open(path, "wt") as fh:
        fh.write(edit(text))


def assert_nothing_written(ws):
    leftovers = list(ws.data.glob("*")) + list(ws.data.glob(".*")) if ws.data.exists() else []
    assert leftovers == []


def test_missing_file_is_named(tree, tmp_path):
    (tree[0] / "hosp" / "diagnoses_icd.csv.gz").unlink()
    ws = Workspace.resolve(tmp_path / "ws")
    with pytest.raises(InputFileError, match=r"diagnoses_icd\.csv\.gz"):
        run_prep(config_for(tree), ws)
    assert_nothing_written(ws)


def test_renamed_column_is_named(tree, tmp_path):
    path = tree[0] / "icu" / "icustays.csv.gz"
    rewrite_gz(path, lambda t: t.replace(",intime,", ",in_time,", 1))
    with pytest.raises(InputFileError, match=r"icustays\.csv\.gz: required column 'intime' not found"):
        run_prep(config_for(tree), Workspace.resolve(tmp_path / "ws"))


def test_reordered_columns_still_read_by_name(tree, tmp_path):
    path = tree[0] / "hosp" / "patients.csv.gz"

    def swap(text):
        rows = [line.split(",") for line in text.strip().splitlines()]
        return "\n".join(",".join([r[2], r[0], r[1], *r[3:]]) for r in rows) + "\n"

    rewrite_gz(path, swap)
    result = run_prep(config_for(tree), Workspace.resolve(tmp_path / "ws"))
    assert result.n_stays == 9


def test_bad_timestamp_names_column_and_value(tree, tmp_path):
    path = tree[0] / "hosp" / "admissions.csv.gz"
    rewrite_gz(path, lambda t: t.replace("2150-07-20 00:00:00", "20/07/2150", 1))
    with pytest.raises(InputFileError, match=r"admissions\.csv\.gz: column 'dischtime' .*'20/07/2150'"):
        run_prep(config_for(tree), Workspace.resolve(tmp_path / "ws"))


def test_empty_table(tree, tmp_path):
    path = tree[0] / "icu" / "icustays.csv.gz"
    rewrite_gz(path, lambda t: t.splitlines()[0] + "\n")
    with pytest.raises(InputFileError, match=r"icustays\.csv\.gz: table has no rows"):
        run_prep(config_for(tree), Workspace.resolve(tmp_path / "ws"))


def test_mimic_v1_is_refused(tree, tmp_path):
    rewrite_gz(tree[0] / "hosp" / "admissions.csv.gz", lambda t: t.replace(",race,", ",ethnicity,", 1))
    with pytest.raises(InputFileError, match="ethnicity"):
        run_prep(config_for(tree), Workspace.resolve(tmp_path / "ws"))


def test_corrupt_jpeg_is_named_and_leaves_previous_outputs(tree, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws")
    run_prep(config_for(tree), ws)
    before = {p.name: p.read_bytes() for p in ws.data.iterdir()}
    bad = image_path(tree[1], 10000001, 50000002, 2)
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputFileError, match=dicom(2)):
        run_prep(config_for(tree, min_age=20), ws)      # a new fingerprint forces a rebuild
    after = {p.name: p.read_bytes() for p in ws.data.iterdir()}
    assert after == before                              # old outputs intact, no temp files


def test_missing_paired_jpeg_is_named(tree, tmp_path):
    image_path(tree[1], 10000005, 50000006, 8).unlink()
    ws = Workspace.resolve(tmp_path / "ws")
    with pytest.raises(InputFileError, match=dicom(8)):
        run_prep(config_for(tree), ws)
    assert_nothing_written(ws)


def test_min_stay_shorter_than_window_is_refused(tree, tmp_path):
    with pytest.raises(ValidationError, match="shorter than window_hours"):
        PrepConfig(mimic_root=tree[0], min_stay_hours=24, window_hours=48)
    sneaky = PrepConfig.model_construct(**{**config_for(tree).__dict__, "min_stay_hours": 24.0})
    with pytest.raises(ConfigError, match="min_stay_hours=24.0 is shorter than window_hours=48"):
        run_prep(sneaky, Workspace.resolve(tmp_path / "ws"))


def test_missing_roots(tmp_path):
    with pytest.raises(ConfigError, match="mimic_root"):
        run_prep(PrepConfig(), Workspace.resolve(tmp_path / "ws"))
    with pytest.raises(InputFileError, match="no hosp/ and icu/"):
        run_prep(PrepConfig(mimic_root=tmp_path), Workspace.resolve(tmp_path / "ws"))


def test_missing_cxr_metadata_is_named(tree, tmp_path):
    (tree[1] / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(InputFileError, match="metadata"):
        run_prep(config_for(tree), Workspace.resolve(tmp_path / "ws"))


def test_non_numeric_value_names_file_line_column_and_value(tree, tmp_path):
    rewrite_gz(tree[0] / "icu" / "chartevents.csv.gz", lambda t: t.replace(",220045,", ",22004x,", 1))
    with pytest.raises(InputFileError,
                       match=r"chartevents\.csv\.gz: cannot read column 'itemid': line 2: value '22004x' is not"):
        run_prep(config_for(tree), Workspace.resolve(tmp_path / "ws"))


def test_more_folds_than_patients_is_refused(tree, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws")
    with pytest.raises(ConfigError, match="8 patients, fewer than n_folds=10"):
        run_prep(config_for(tree, n_folds=10), ws)
    assert_nothing_written(ws)
