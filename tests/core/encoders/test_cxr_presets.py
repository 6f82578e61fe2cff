"""torchxrayvision's DenseNet-121 checkpoint format, read without torchxrayvision and without a download,
and the encoder cards (issue 12 §3, issue 17 §5)."""

import argparse
import logging

import numpy as np
import pytest
import torch

from mmfair.core.config import PrepConfig
from mmfair.core.encoders.cxr import CXR_PRESETS, build_cxr_backbone, declared_card
from mmfair.core.errors import ConfigError, InputFileError

xrv = pytest.importorskip("torchxrayvision")
CHEX = "xrv-densenet121-res224-chex"


@pytest.fixture(scope="module")
def xrv_model():
    """torchxrayvision's own DenseNet, randomly initialised (weights=None: nothing is downloaded), with random
    BatchNorm statistics and the calibration buffer a released checkpoint carries."""
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    model.op_threshs = torch.rand(18)
    return model.eval()


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torchxrayvision tried to download weights")

    monkeypatch.setattr(xrv.models, "get_weights", refuse)


@pytest.fixture(autouse=True)
def one_thread():
    # DenseNet-121 at 224 px: one thread is ~10x faster than two on a machine other jobs keep busy
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _save(model, path, fmt):
    torch.save(model if fmt == "release" else model.state_dict(), path)  # release files pickle the module
    return path


@pytest.mark.parametrize("fmt", ["release", "state_dict"])
def test_backbone_matches_torchxrayvision_features(xrv_model, tmp_path, fmt):
    path = _save(xrv_model, tmp_path / "chex.pt", fmt)
    backbone = build_cxr_backbone(CHEX, path).eval()
    assert backbone.num_features == 1024 and backbone.model_name == "densenet121"
    x = torch.rand(2, 1, 224, 224) * 2048 - 1024  # torchxrayvision's input range
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), xrv_model.features2(x.clone()), rtol=1e-4, atol=1e-4)


def test_prep_embeds_with_torchxrayvision_preprocessing(xrv_model, tmp_path, caplog):
    from mmfair.core.data.cxr_encoder import fit_and_embed

    path = _save(xrv_model, tmp_path / "chex.pt", "release")
    rng = np.random.default_rng(0)
    cohort = rng.integers(0, 256, size=(3, 224, 224), dtype=np.uint8)
    train = np.zeros((0, 32, 32), np.uint8)
    cfg = PrepConfig(cxr_encoder=CHEX, cxr_weights=path, encoder_threads=1)
    with caplog.at_level(logging.WARNING, logger="mmfair.core.data.cxr_encoder"):
        res = fit_and_embed(train, np.zeros((0, 2), np.float32), np.zeros(0, np.int64), ["A", "B"], cohort, cfg,
                            device="cpu")
    # torchxrayvision's own pipeline: pixels scaled to [-1024, 1024], then its forward pass
    x = torch.from_numpy(xrv.datasets.normalize(cohort.astype(np.float32), 255))[:, None]
    with torch.no_grad():
        expect = xrv_model.features2(x).numpy()
    np.testing.assert_allclose(res.embeddings.astype(np.float32), expect, rtol=1e-2, atol=1e-2)
    a = res.attrs
    assert a["model"] == "densenet121" and a["preset"] == CHEX and a["image_size"] == 224
    assert a["norm_mean"] == 0.5 and a["norm_std"] == round(1 / 2048, 6)
    assert a["pretraining_data"] == "CheXpert (Stanford)" and a["pretraining_mimic_cxr"] == "none"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # CheXpert never saw MIMIC-CXR


def test_mimic_trained_preset_is_warned_about_loudly(xrv_model, tmp_path, caplog):
    from mmfair.core.data.cxr_encoder import fit_and_embed

    path = _save(xrv_model, tmp_path / "all.pt", "state_dict")
    cfg = PrepConfig(cxr_encoder="xrv-densenet121-res224-all", cxr_weights=path, encoder_threads=1)
    with caplog.at_level(logging.WARNING, logger="mmfair.core.data.cxr_encoder"):
        res = fit_and_embed(np.zeros((0, 32, 32), np.uint8), np.zeros((0, 1), np.float32), np.zeros(0, np.int64),
                            ["A"], np.zeros((1, 224, 224), np.uint8), cfg, device="cpu")
    assert res.attrs["pretraining_mimic_cxr"] == "yes"
    assert any("PROVENANCE" in r.getMessage() and "MIMIC-CXR" in r.getMessage() for r in caplog.records)


def test_preset_needs_a_local_file():
    with pytest.raises(ConfigError, match="needs a local weights file"):
        build_cxr_backbone(CHEX, None)


def test_other_pickles_and_other_shapes_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"cfg": argparse.Namespace(a=1)}, foreign)
    with pytest.raises(InputFileError, match="not a torchxrayvision checkpoint"):
        build_cxr_backbone(CHEX, foreign)
    narrow = tmp_path / "narrow.pt"
    torch.save(xrv.models.DenseNet(weights=None, growth_rate=16).state_dict(), narrow)
    with pytest.raises(ConfigError, match="do not fit preset"):
        build_cxr_backbone(CHEX, narrow)


@pytest.mark.parametrize("text,seen", [(None, "unknown"), ("", "unknown"), ("ImageNet-1k", "none"),
                                       ("MIMIC-CXR, CheXpert", "yes"), ("RAD-DINO", "yes")])
def test_declared_cards(text, seen):
    assert declared_card(text).mimic_cxr == seen


def test_preset_cards():
    seen = {name: CXR_PRESETS.get(name).card.mimic_cxr for name in CXR_PRESETS.names()}
    assert seen[CHEX] == "none" and seen["xrv-densenet121-res224-nih"] == "none"
    assert seen["xrv-densenet121-res224-all"] == seen["xrv-densenet121-res224-mimic_nb"] == "yes"
    assert seen["xrv-densenet121-res224-mimic_ch"] == "yes"
