"""features.h5 and variable_coverage.csv on the hand-written tree."""

import json

import numpy as np
import pandas as pd
import pytest

import mmfair
from mmfair.core.config import PrepConfig
from mmfair.core.data.prep import run_prep
from mmfair.core.data.store import open_store, store_fingerprint
from mmfair.core.errors import InputFileError
from mmfair.core.workspace import Workspace

FEATURES = ["heart_rate", "sbp", "dbp", "mbp", "resp_rate", "temperature", "spo2", "fio2", "capillary_refill",
            "weight", "height", "gcs_eye", "gcs_verbal", "gcs_motor", "gcs_total", "glucose", "ph", "sao2"]


@pytest.fixture(scope="module")
def store(prepped):
    ws = prepped[0]
    with open_store(ws.features_h5, ws.cohort_csv) as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["ehr/feature_names"][:]]
        groups = [g.decode() if isinstance(g, bytes) else g for g in f["ehr/feature_groups"][:]]
        yield {"attrs": dict(f.attrs), "values": f["ehr/values"][:], "names": names, "groups": groups,
               "stay_id": f["stay_id"][:], "images": f["cxr/images"][:], "row": f["cxr/row"][:],
               "images_chunks": f["cxr/images"].chunks, "images_compression": f["cxr/images"].compression}


def value(store, stay_row, hour, name):
    return float(store["values"][stay_row, hour, store["names"].index(name)])


def test_layout_and_attrs(store, prepped):
    assert store["names"] == FEATURES
    assert store["groups"][:11] == ["vitals"] * 11
    assert store["groups"][11:15] == ["neuro"] * 4 and store["groups"][15:] == ["labs"] * 3
    assert store["values"].dtype == np.float32 and store["values"].shape == (9, 48, 18)
    assert store["stay_id"].dtype == np.int64 and store["stay_id"][0] == 30000001
    attrs = store["attrs"]
    assert attrs["mmfair_version"] == mmfair.__version__ and attrs["schema_version"] == "1"
    assert attrs["source"] == "mimic-iv-2.2"
    assert json.loads(attrs["config"])["window_hours"] == 48
    assert attrs["fingerprint"] == prepped[1].fingerprint == store_fingerprint(prepped[0].features_h5)


def test_last_observation_wins(store):
    assert value(store, 0, 0, "heart_rate") == 90       # later charttime
    assert value(store, 0, 1, "heart_rate") == 95       # same charttime, later storetime
    assert value(store, 0, 2, "heart_rate") == 72       # same charttime and storetime: larger value
    assert value(store, 0, 47, "heart_rate") == 110     # last hour of the window
    assert value(store, 0, 0, "sbp") == 110             # tie broken by itemid priority (arterial)
    assert np.isnan(store["values"][0, 3:, 0][[0, 1, 2]]).all()


def test_unit_conversions(store):
    assert value(store, 0, 4, "temperature") == pytest.approx(37.0, abs=1e-4)     # 98.6 F
    assert value(store, 0, 0, "fio2") == pytest.approx(0.4)                         # 40 %
    assert value(store, 0, 3, "fio2") == pytest.approx(0.5)
    assert value(store, 0, 0, "weight") == pytest.approx(220 * 0.45359237, abs=1e-3)
    assert value(store, 0, 0, "height") == pytest.approx(177.8, abs=1e-3)
    assert value(store, 0, 2, "spo2") == pytest.approx(97.0)                        # 0.97


def test_text_items_and_gcs(store):
    assert value(store, 0, 0, "capillary_refill") == 0 and value(store, 0, 1, "capillary_refill") == 1
    assert [value(store, 0, 8, n) for n in ("gcs_eye", "gcs_verbal", "gcs_motor", "gcs_total")] == [3, 4, 6, 13]
    # text-only eye; 'No Response-ETT' is verbal 0 and makes the total 15 (mimic-code)
    assert [value(store, 0, 10, n) for n in ("gcs_eye", "gcs_verbal", "gcs_motor", "gcs_total")] == [4, 0, 5, 15]
    assert value(store, 0, 12, "gcs_eye") == 2 and np.isnan(value(store, 0, 12, "gcs_total"))


def test_labs_blood_only_and_attached_by_subject_and_time(store):
    assert value(store, 0, 2, "glucose") == 180               # blood lab after the finger stick; urine ignored
    assert value(store, 0, 4, "ph") == pytest.approx(7.35)    # blood gas; urine pH ignored
    assert value(store, 0, 3, "sao2") == 93                   # lab 50817 after chart 220227, separate from SpO2
    assert np.isnan(value(store, 0, 3, "spo2"))
    assert value(store, 1, 3, "glucose") == 200               # empty hadm_id: second stay by time
    assert np.isnan(store["values"][1, :, :15]).all()


def test_out_of_range_dropped_and_counted(store, prepped):
    assert np.isnan(value(store, 0, 5, "temperature"))
    assert value(store, 0, 6, "temperature") == 36.5          # the valid one of the hour is kept
    coverage = pd.read_csv(prepped[0].data / "variable_coverage.csv")
    assert list(coverage.columns) == ["variable", "hour", "observed_share", "out_of_range"]
    assert len(coverage) == 18 * 48
    temp = coverage[coverage["variable"] == "temperature"].set_index("hour")
    assert temp.loc[5, "out_of_range"] == 1 and temp.loc[6, "out_of_range"] == 1
    assert temp.loc[6, "observed_share"] == pytest.approx(1 / 9, abs=1e-6)
    assert coverage["out_of_range"].sum() == 2
    hr = coverage[coverage["variable"] == "heart_rate"].set_index("hour")
    assert hr.loc[0, "observed_share"] == pytest.approx(2 / 9, abs=1e-6)   # stays 30000001 and 30000006


def test_no_filling_at_prep_time(store):
    assert np.isnan(store["values"]).mean() > 0.9
    assert np.isnan(store["values"][2:, :, :]).sum() == store["values"][2:].size - 1   # stay 30000006: one HR


def test_images_and_rows(store):
    assert store["row"].tolist() == [0, -1, 1, -1, -1, -1, -1, -1, -1]
    images = store["images"]
    assert images.dtype == np.uint8 and images.shape == (2, 256, 256)
    assert abs(int(images[0, 128, 128]) - 200) <= 3 and abs(int(images[1, 128, 128]) - 170) <= 3
    assert images[0, 5, 128] == 0                              # 64x48 letterboxed: padding rows
    assert store["images_chunks"][0] == 1 and store["images_compression"] == "gzip"


def test_open_store_refuses_a_mismatched_cohort(prepped, tmp_path):
    ws = prepped[0]
    table = pd.read_csv(ws.cohort_csv)
    other = tmp_path / "cohort.csv"
    table.iloc[::-1].to_csv(other, index=False)
    with pytest.raises(InputFileError, match="stay_id"):
        open_store(ws.features_h5, other)
    table.iloc[:-1].to_csv(other, index=False)
    with pytest.raises(InputFileError, match="8 rows"):
        open_store(ws.features_h5, other)


def test_rerun_reuses_and_a_changed_option_rebuilds(tree, tmp_path, caplog):
    ws = Workspace.resolve(tmp_path / "ws")
    config = PrepConfig(mimic_root=tree[0], cxr_root=tree[1], skip_encoder=True, workers=1)
    first = run_prep(config, ws)
    mtime = ws.features_h5.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="mmfair.core.data.prep"):
        again = run_prep(config, ws)
    assert again.reused and again.n_stays == first.n_stays and again.n_with_cxr == 2
    assert ws.features_h5.stat().st_mtime_ns == mtime and "reusing" in caplog.text
    changed = run_prep(config.model_copy(update={"min_age": 40}), ws)
    assert not changed.reused and changed.n_stays < first.n_stays
    assert store_fingerprint(ws.features_h5) != first.fingerprint
    assert not list(ws.data.glob(".*.tmp"))


def test_accepts_parent_folder_and_plain_csv(tree, tmp_path):
    # tree[0] is .../mimiciv/2.2 and d_labitems is a plain .csv there; pass the parent folder
    ws = Workspace.resolve(tmp_path / "ws")
    calls = []
    result = run_prep(PrepConfig(mimic_root=tree[0].parent, cxr_root=tree[1], skip_encoder=True, workers=1), ws,
                      progress=lambda *args: calls.append(args))
    assert result.n_stays == 9 and result.source == "mimic-iv-2.2"
    assert calls[0] == ("cohort", 0, 5) and calls[-1] == ("done", 5, 5)


def test_accepts_the_parent_of_the_cxr_version_folder(tree, tmp_path):
    ws = Workspace.resolve(tmp_path / "ws")
    result = run_prep(PrepConfig(mimic_root=tree[0], cxr_root=tree[1].parent, skip_encoder=True, workers=1), ws)
    assert result.n_with_cxr == 2


def test_source_label_synthetic_tree_and_override(tree, tmp_path):
    marker = tree[0].parent.parent / "ground_truth" / "switches.json"
    marker.parent.mkdir()
    marker.write_text("{}")
    config = PrepConfig(mimic_root=tree[0], cxr_root=None, skip_encoder=True)
    assert run_prep(config, Workspace.resolve(tmp_path / "a")).source == "synthetic"
    labelled = config.model_copy(update={"source_label": "my-extract"})
    assert run_prep(labelled, Workspace.resolve(tmp_path / "b")).source == "my-extract"
