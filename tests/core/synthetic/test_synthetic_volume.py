"""MIMIC-scale volume of the synthetic source: extra rows of unused itemids only, streamed chunk by chunk,
and the default compact output unchanged."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from mmfair.core.config import PrepConfig, SyntheticConfig
from mmfair.core.data.prep import run_prep
from mmfair.core.synthetic import _volume, _writer, generate_source
from mmfair.core.data.variables import load_variable_map
from mmfair.core.workspace import Workspace

TINY = dict(n_stays=40, seed=7, n_encoder_subjects=8, min_image_size=48, max_image_size=72)
# sha256 (first 16 hex digits) of the decompressed tables of the TINY compact tree, as written by the
# generator before the volume option existed: the default output must not move.
COMPACT_DIGESTS = {
    "mimiciv/2.2/icu/chartevents.csv.gz": "eea93bd2d6bc8fff",
    "mimiciv/2.2/hosp/labevents.csv.gz": "a8ce0499b02b93d1",
    "mimiciv/2.2/icu/d_items.csv.gz": "5340bc02b101525e",
    "mimiciv/2.2/hosp/d_labitems.csv.gz": "8d12d6914abff51f",
    "mimiciv/2.2/icu/icustays.csv.gz": "8644dd850b4c185c",
    "mimiciv/2.2/icu/outputevents.csv.gz": "e658f3eb5410dbd6",
    "ground_truth/stays.csv": "1ee2464c84f62346",
}
V22_CHART_PER_STAY, V22_LABS_PER_STAY = 313_645_063 / 73_181, 118_171_367 / 73_181


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("volume")
    return {volume: generate_source(SyntheticConfig(**TINY, chart_volume=volume), root / volume)
            for volume in ("compact", "mimic")}


def read_text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def mapped_itemids() -> set[int]:
    return {source.itemid for spec in ("standard", "extended") for variable in load_variable_map(spec).variables
            for source in variable.sources}


def test_default_compact_output_is_unchanged(trees):
    root = trees["compact"].ground_truth.parent
    for relative, digest in COMPACT_DIGESTS.items():
        raw = (root / relative).read_bytes()
        text = gzip.decompress(raw) if relative.endswith(".gz") else raw
        assert hashlib.sha256(text).hexdigest()[:16] == digest, relative
    identity = json.loads((trees["compact"].ground_truth / "config.json").read_text())
    assert "chart_volume" not in identity["config"]  # trees written before the option are still reused


def test_mimic_volume_adds_rows_of_unused_itemids_only(trees):
    for table, extra_items in (("icu/chartevents", _volume.CHART_ITEMS), ("hosp/labevents", _volume.LAB_ITEMS)):
        compact = read_text(trees["compact"].mimic_root / f"{table}.csv.gz")
        mimic = read_text(trees["mimic"].mimic_root / f"{table}.csv.gz")
        assert list(mimic.columns) == list(compact.columns)
        extra_ids = {str(item.itemid) for item in extra_items}
        assert not extra_ids & set(compact["itemid"])
        kept = mimic[~mimic["itemid"].isin(extra_ids)]
        key = list(compact.columns)
        pd.testing.assert_frame_equal(kept.sort_values(key).reset_index(drop=True),
                                      compact.sort_values(key).reset_index(drop=True))
        assert len(mimic) > 5 * len(compact)
    assert not {item.itemid for item in _volume.CHART_ITEMS + _volume.LAB_ITEMS} & mapped_itemids()


def test_mimic_volume_matches_v22_rows_per_stay_and_spreads_times(trees):
    root = trees["mimic"].mimic_root
    stays = read_text(root / "icu/icustays.csv.gz")
    chart = read_text(root / "icu/chartevents.csv.gz")
    labs = read_text(root / "hosp/labevents.csv.gz")
    assert len(chart) / len(stays) == pytest.approx(V22_CHART_PER_STAY, rel=0.05)
    assert len(labs) / len(stays) == pytest.approx(V22_LABS_PER_STAY, rel=0.05)

    extra = chart[chart["itemid"].isin({str(i.itemid) for i in _volume.CHART_ITEMS})]
    hours = ((pd.to_datetime(extra["charttime"]) - pd.to_datetime(extra["stay_id"].map(
        stays.set_index("stay_id")["intime"]))).dt.total_seconds() / 3600)
    assert (hours < 0).any() and ((hours >= 0) & (hours < 48)).any() and (hours >= 48).any()
    text_items = {str(i.itemid) for i in _volume.CHART_ITEMS if i.is_text}
    assert (extra.loc[extra["itemid"].isin(text_items), "valuenum"] == "").all()
    numeric = extra[~extra["itemid"].isin(text_items)]
    assert np.allclose(numeric["value"].astype(float), numeric["valuenum"].astype(float))
    assert pd.to_datetime(extra["charttime"]).dt.second.eq(0).all()

    extra_labs = labs[labs["itemid"].isin({str(i.itemid) for i in _volume.LAB_ITEMS})]
    assert (extra_labs["hadm_id"] == "").mean() > 0.1       # outpatient draws
    assert set(extra_labs["labevent_id"]).isdisjoint(set(labs.loc[~labs.index.isin(extra_labs.index), "labevent_id"]))
    assert labs["labevent_id"].is_unique

    d_items = read_text(root / "icu/d_items.csv.gz")
    d_labitems = read_text(root / "hosp/d_labitems.csv.gz")
    assert set(extra["itemid"]) <= set(d_items["itemid"])
    assert set(extra_labs["itemid"]) <= set(d_labitems["itemid"])
    urine = {str(i.itemid) for i in _volume.LAB_ITEMS if i.fluid == "Urine"}
    assert set(d_labitems.loc[d_labitems["itemid"].isin(urine), "fluid"]) == {"Urine"}


def test_prep_output_is_the_same_with_mimic_volume(trees, tmp_path):
    outputs = {}
    for volume, source in trees.items():
        ws = Workspace.resolve(tmp_path / volume)
        run_prep(PrepConfig(mimic_root=source.mimic_root, cxr_root=None, skip_encoder=True, workers=1,
                            variables="extended"), ws)
        outputs[volume] = ws.data
    compact, mimic = outputs["compact"], outputs["mimic"]
    for name in ("attrition.csv", "cohort.csv", "table1.csv", "variable_coverage.csv"):
        assert (compact / name).read_bytes() == (mimic / name).read_bytes(), name
    with h5py.File(compact / "features.h5") as a, h5py.File(mimic / "features.h5") as b:
        assert a["ehr/values"].shape == b["ehr/values"].shape and a["ehr/values"].shape[0] == TINY["n_stays"]
        np.testing.assert_array_equal(a["ehr/values"][()], b["ehr/values"][()])
        np.testing.assert_array_equal(a["stay_id"][()], b["stay_id"][()])
        assert np.isfinite(a["ehr/values"][()]).any()


def test_mimic_volume_is_deterministic(trees, tmp_path):
    again = generate_source(SyntheticConfig(**TINY, chart_volume="mimic"), tmp_path / "again")
    for table in ("icu/chartevents.csv.gz", "hosp/labevents.csv.gz"):
        assert (again.mimic_root / table).read_bytes() == (trees["mimic"].mimic_root / table).read_bytes()
    identity = json.loads((again.ground_truth / "config.json").read_text())
    assert identity["config"]["chart_volume"] == "mimic"


def test_chunks_keep_every_compact_row_and_sort_by_stay_and_time():
    stays = pd.DataFrame({
        "subject_id": [11, 12, 13], "hadm_id": [21, 22, 23], "stay_id": [31, 32, 33],
        "intime": pd.to_datetime(["2150-01-01 10:00:00", "2150-02-01 00:00:00", "2150-03-01 00:00:00"]),
        "outtime": pd.to_datetime(["2150-01-03 10:00:00", "2150-02-02 00:00:00", "2150-03-01 06:00:00"]),
        "admittime": pd.to_datetime(["2149-12-31", "2150-01-31", "2150-02-28"]),
        "dischtime": pd.to_datetime(["2150-01-05", "2150-02-03", "2150-03-02"]),
    })
    t = np.array(["2150-01-01T12:00:00", "2150-03-01T01:00:00", "2150-01-01T11:00:00"], dtype="datetime64[s]")
    chart = {"stay_row": np.array([0, 2, 0]), "charttime": t, "itemid": np.array([220045, 220045, 220277]),
             "value": np.array(["80", "90", "97"], dtype=object)}
    labs = {"stay_row": np.array([1]), "charttime": t[:1], "itemid": np.array([50912]),
            "labevent_id": np.array([1001])}
    chunks = list(_volume.chunks(stays, _with_extra_columns(chart, "chart"), _with_extra_columns(labs, "labs"), seed=1,
                                 stays_per_chunk=2))
    assert len(chunks) == 2
    merged = {k: np.concatenate([c.chart[k] for c in chunks]) for k in ("stay_row", "charttime", "itemid")}
    assert (np.diff(merged["stay_row"]) >= 0).all()
    for stay in range(3):
        assert (np.diff(merged["charttime"][merged["stay_row"] == stay].astype(np.int64)) >= 0).all()
    compact = np.isin(merged["itemid"], [220045, 220277])
    assert sorted(zip(merged["stay_row"][compact], merged["itemid"][compact])) == [(0, 220045), (0, 220277),
                                                                                    (2, 220045)]
    lab_ids = np.concatenate([c.labs["labevent_id"] for c in chunks])
    assert 1001 in lab_ids and len(set(lab_ids)) == len(lab_ids) and lab_ids.min() == 1001
    # rows per stay track stay length: the 48 h stay gets about 8x the 6 h stay's rows
    per_stay = np.bincount(merged["stay_row"], minlength=3)
    assert per_stay[0] > 4 * per_stay[2] > 0


def _with_extra_columns(table: dict, kind: str) -> dict:
    """Fill the columns a compact table carries besides the ones a test cares about."""
    n = len(table["stay_row"])
    columns = ({"subject_id": 0, "hadm_id": 0, "stay_id": 0, "caregiver_id": 0, "valuenum": 0.0, "valueuom": "",
                "warning": 0} if kind == "chart" else
               {"subject_id": 0, "hadm_id": 0.0, "specimen_id": 0, "order_provider_id": "", "value": "",
                "valuenum": 0.0, "valueuom": "", "ref_range_lower": 0.0, "ref_range_upper": 0.0, "flag": "",
                "priority": "", "comments": ""})
    out = dict(table)
    for name, fill in columns.items():
        out[name] = np.full(n, fill, dtype=object if isinstance(fill, str) else type(fill))
    out["storetime"] = table["charttime"]
    return out


@pytest.mark.parametrize("pieces", [[7], [1, 6], [3, 0, 2, 2]])
def test_chunked_writing_gives_the_same_file_as_one_write(tmp_path, monkeypatch, pieces):
    monkeypatch.setattr(_writer, "ROWS_PER_SLICE", 2)  # slices inside each append as well
    table = {
        "id": np.arange(7), "when": np.array(["2150-01-01T00:00:00"] * 3 + ["2150-01-02T03:04:05"] * 4,
                                              dtype="datetime64[s]"),
        "text": np.array(["a", "b,c", 'say "hi"', "", "a", "d", "e"], dtype=object),
        "number": np.array([1.5, np.nan, 2.0, 3.25, -0.0, 0.1, 0.0]),  # -0.0 and 0.0 in different slices
        "maybe": np.array([1.0, np.nan, 3.0, 4.0, np.nan, 6.0, 7.0]),
    }
    columns = ["id", "when", "text", "number", "maybe"]
    kinds = {"maybe": _writer.NULLABLE_INT}
    monkeypatch.setattr(_writer, "ROWS_PER_SLICE", 10**6)
    _writer.write_table(tmp_path / "one.csv.gz", table, columns, kinds)
    monkeypatch.setattr(_writer, "ROWS_PER_SLICE", 2)
    with _writer.TableWriter(tmp_path / "pieces.csv.gz", columns, kinds) as out:
        start = 0
        for size in pieces:
            out.append({k: v[start:start + size] for k, v in table.items()})
            start += size
    assert out.n_rows == 7
    assert (tmp_path / "pieces.csv.gz").read_bytes() == (tmp_path / "one.csv.gz").read_bytes()
    lines = gzip.decompress((tmp_path / "one.csv.gz").read_bytes()).decode().splitlines()
    assert lines[0] == "id,when,text,number,maybe"
    assert lines[2] == '1,2150-01-01 00:00:00,"b,c",,'
    assert lines[3] == '2,2150-01-01 00:00:00,"say ""hi""",2,3'
    assert len(lines) == 8
    assert lines[5].split(",")[3] == "0" and lines[7].split(",")[3] == "0"


@pytest.mark.parametrize("args, message", [
    (["--chart-volume", "huge"], "chart_volume"),
    (["--mimic-root", "somewhere", "--chart-volume", "mimic"], "apply to the synthetic source only"),
])
def test_prep_cli_refuses_a_bad_chart_volume(tmp_path, args, message):
    from typer.testing import CliRunner

    from mmfair.cli.app import app

    result = CliRunner().invoke(app, ["--workspace", str(tmp_path / "ws"), "prep", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "ws" / "source").exists()
