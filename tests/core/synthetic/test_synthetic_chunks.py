"""The synthetic source draws its events a chunk of stays at a time (bounded memory at MIMIC scale).

Chunks are made small here so a tiny tree has several; the properties are the ones that matter at 75,000
stays: memory holds one chunk, chunks follow the same model with draws of their own, ids stay unique over
chunks, the population (hence the cohort and labels) does not depend on chunking, and prep reads the same
values whether the tree is drawn at the compact or at MIMIC's volume.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

import mmfair.core.synthetic as synthetic
from mmfair.core.config import PrepConfig, SyntheticConfig
from mmfair.core.data.prep import run_prep
from mmfair.core.synthetic import _volume, generate_source
from mmfair.core.workspace import Workspace

TINY = dict(n_stays=40, seed=7, n_encoder_subjects=8, min_image_size=48, max_image_size=72)
CHUNK = 20


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunks")
    out = {"whole": generate_source(SyntheticConfig(**TINY), root / "whole")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic, "EVENT_CHUNK_STAYS", CHUNK)
        patch.setattr(_volume, "STAYS_PER_CHUNK", CHUNK // 2)
        for volume in ("compact", "mimic"):
            out[volume] = generate_source(SyntheticConfig(**TINY, chart_volume=volume), root / volume)
        out["mimic_again"] = generate_source(SyntheticConfig(**TINY, chart_volume="mimic"), root / "again")
    return out


def table(source, relative: str) -> pd.DataFrame:
    return pd.read_csv(source.mimic_root / relative, dtype=str, keep_default_na=False)


def test_events_are_drawn_at_most_one_chunk_at_a_time(monkeypatch, tmp_path):
    sizes: list[int] = []
    real = synthetic.build_events

    def spy(stays, *args, **kwargs):
        sizes.append(len(stays))
        return real(stays, *args, **kwargs)

    monkeypatch.setattr(synthetic, "build_events", spy)
    monkeypatch.setattr(synthetic, "EVENT_CHUNK_STAYS", CHUNK)
    source = generate_source(SyntheticConfig(**TINY), tmp_path / "spy")
    n_stays = len(table(source, "icu/icustays.csv.gz"))
    assert n_stays > 2 * CHUNK  # the tree really has several chunks
    assert max(sizes) == CHUNK and sum(sizes) == n_stays


def test_chunked_events_follow_the_same_model_with_their_own_draws(trees):
    whole, chunked = table(trees["whole"], "icu/chartevents.csv.gz"), table(trees["compact"], "icu/chartevents.csv.gz")
    assert set(whole["stay_id"]) == set(chunked["stay_id"])
    assert not whole["valuenum"].equals(chunked["valuenum"])  # other streams, so other draws
    counts = pd.concat({"whole": whole["itemid"].value_counts(), "chunked": chunked["itemid"].value_counts()},
                       axis=1).fillna(0)
    common = counts[counts["whole"] >= 200]
    assert len(common) >= 8
    np.testing.assert_allclose(common["chunked"], common["whole"], rtol=0.25)
    # the same stays have the same slots, so per-stay heart-rate counts barely move
    hr = {name: frame[frame["itemid"] == "220045"].groupby("stay_id").size() for name, frame in
          (("whole", whole), ("chunked", chunked))}
    assert np.corrcoef(hr["whole"].sort_index(), hr["chunked"].reindex(hr["whole"].index).fillna(0))[0, 1] > 0.95


@pytest.mark.parametrize("volume", ["compact", "mimic"])
def test_ids_stay_unique_over_chunks(trees, volume):
    labs = table(trees[volume], "hosp/labevents.csv.gz")
    ids = labs["labevent_id"].astype(np.int64).to_numpy()
    assert len(np.unique(ids)) == len(ids) and ids.min() == 1001
    if volume == "compact":  # every specimen is a compact panel's (the volume's extras draw theirs at random)
        per_specimen = labs.groupby("specimen_id")["subject_id"].nunique()
        assert (per_specimen == 1).all()  # no specimen id is shared by two chunks' panels


def test_determinism_and_population_do_not_depend_on_chunking(trees):
    for relative in ("icu/chartevents.csv.gz", "hosp/labevents.csv.gz", "icu/outputevents.csv.gz"):
        assert (trees["mimic"].mimic_root / relative).read_bytes() == \
            (trees["mimic_again"].mimic_root / relative).read_bytes()
    for relative in ("icu/icustays.csv.gz", "hosp/admissions.csv.gz", "hosp/patients.csv.gz",
                     "hosp/diagnoses_icd.csv.gz"):
        assert (trees["whole"].mimic_root / relative).read_bytes() == \
            (trees["compact"].mimic_root / relative).read_bytes()
    assert (trees["whole"].ground_truth / "stays.csv").read_bytes() == \
        (trees["compact"].ground_truth / "stays.csv").read_bytes()


def test_prep_reads_the_same_values_at_either_volume_when_chunked(trees, tmp_path):
    values = {}
    for volume in ("compact", "mimic"):
        ws = Workspace.resolve(tmp_path / volume)
        run_prep(PrepConfig(mimic_root=trees[volume].mimic_root, cxr_root=None, skip_encoder=True, workers=1), ws)
        with h5py.File(ws.features_h5) as store:
            values[volume] = store["ehr/values"][()]
        values[volume + "_cohort"] = (ws.data / "cohort.csv").read_bytes()
    np.testing.assert_array_equal(values["compact"], values["mimic"])
    assert np.isfinite(values["compact"]).mean() > 0.05
    assert values["compact_cohort"] == values["mimic_cohort"]
