"""The encoder stage, with a fake ``fit_and_embed`` (the real one lives in cxr_encoder.py)."""

import sys
import types

import h5py
import numpy as np
import pytest

from mimic_tree import dicom
from mmfair.core.config import PrepConfig
from mmfair.core.data.prep import run_prep
from mmfair.core.data.store import open_store
from mmfair.core.workspace import Workspace


@pytest.fixture
def fake_encoder(monkeypatch):
    calls = []

    def fit_and_embed(train_images, train_labels, train_subjects, finding_names, cohort_images, config, **kwargs):
        calls.append(dict(train_images=train_images, train_labels=train_labels, train_subjects=train_subjects,
                          finding_names=finding_names, cohort_images=cohort_images, config=config))
        rng = np.random.default_rng(0)
        return types.SimpleNamespace(
            encoder_id="fake-resnet",
            embeddings=rng.normal(size=(len(cohort_images), 8)).astype(np.float16),
            attrs={"timm_model": "fake", "weights": "random-init", "image_size": config.encoder_image_size,
                   "heldout_auroc": {"Edema": float("nan")}},
            heldout_auroc={"Atelectasis": 0.75, "Edema": float("nan")},
        )

    module = types.ModuleType("mmfair.core.data.cxr_encoder")
    module.fit_and_embed = fit_and_embed
    monkeypatch.setitem(sys.modules, "mmfair.core.data.cxr_encoder", module)
    return calls


def test_encoder_sees_only_non_cohort_frontal_images(tree, tmp_path, fake_encoder):
    ws = Workspace.resolve(tmp_path / "ws")
    config = PrepConfig(mimic_root=tree[0], cxr_root=tree[1], workers=1, encoder_image_size=32)
    result = run_prep(config, ws)
    (call,) = fake_encoder
    assert call["train_images"].shape == (4, 32, 32) and call["train_images"].dtype == np.uint8
    assert sorted(call["train_subjects"].tolist()) == [10000002, 10000020, 10000020, 10000021]
    assert len(call["finding_names"]) == 14 and call["finding_names"][0] == "Atelectasis"
    labels = call["train_labels"]
    assert labels.shape == (4, 14) and labels.dtype == np.float32
    first = labels[0]                                       # dicom 20 (sorted by dicom_id), study 50000020
    assert first[:3].tolist() == [1.0, 0.0, -1.0] and np.isnan(first[3]) and first[13] == 1.0
    assert call["cohort_images"].shape == (2, 256, 256)
    assert abs(int(call["train_images"][0, 16, 16]) - 60) <= 3
    assert result.encoder == {"encoder_id": "fake-resnet", "random_init": True,
                              "heldout_auroc": {"Atelectasis": 0.75, "Edema": None}}
    with open_store(ws.features_h5, ws.cohort_csv) as f:
        ds = f["cxr/embeddings/fake-resnet"]
        assert ds.dtype == np.float16 and ds.shape == (2, 8)
        assert ds.attrs["timm_model"] == "fake" and ds.attrs["image_size"] == 32
    assert "encoder" in result.stage_seconds


def test_encoder_can_run_alone_on_an_existing_store(tree, tmp_path, fake_encoder):
    ws = Workspace.resolve(tmp_path / "ws")
    base = PrepConfig(mimic_root=tree[0], cxr_root=tree[1], workers=1, encoder_image_size=32, skip_encoder=True)
    first = run_prep(base, ws)
    assert first.encoder is None and fake_encoder == []
    cohort_before = ws.cohort_csv.read_bytes()
    second = run_prep(base.model_copy(update={"skip_encoder": False}), ws)
    assert second.reused and len(fake_encoder) == 1 and second.encoder["encoder_id"] == "fake-resnet"
    assert ws.cohort_csv.read_bytes() == cohort_before
    with h5py.File(ws.features_h5, "r") as f:
        assert "fake-resnet" in f["cxr/embeddings"] and f.attrs["fingerprint"] == first.fingerprint
    third = run_prep(base.model_copy(update={"skip_encoder": False}), ws)
    assert third.reused and len(fake_encoder) == 1          # same encoder options: nothing to redo
    assert not list(ws.data.glob(".*.tmp"))


def test_no_cxr_root_skips_the_encoder(tree, tmp_path, fake_encoder, caplog):
    ws = Workspace.resolve(tmp_path / "ws")
    with caplog.at_level("WARNING"):
        result = run_prep(PrepConfig(mimic_root=tree[0], workers=1), ws)
    assert result.n_with_cxr == 0 and result.encoder is None and fake_encoder == []
    assert "EHR-only" in caplog.text
    with h5py.File(ws.features_h5, "r") as f:
        assert f["cxr/images"].shape[0] == 0 and (f["cxr/row"][:] == -1).all()
    assert dicom(2) not in ws.cohort_csv.read_text()


@pytest.mark.slow
def test_real_encoder_on_the_tiny_tree(tree, tmp_path):
    """The real cxr_encoder end to end: too few non-cohort images, so a random-init fallback."""
    pytest.importorskip("mmfair.core.data.cxr_encoder")
    ws = Workspace.resolve(tmp_path / "ws")
    config = PrepConfig(mimic_root=tree[0], cxr_root=tree[1], workers=1, encoder_image_size=32,
                        cxr_encoder="test_resnet.r160_in1k", encoder_max_epochs=1)
    result = run_prep(config, ws)
    assert result.encoder is not None and result.encoder["random_init"] is True
    with open_store(ws.features_h5, ws.cohort_csv) as f:
        ds = f["cxr/embeddings"][result.encoder["encoder_id"]]
        assert ds.shape[0] == 2 and ds.dtype == np.float16
