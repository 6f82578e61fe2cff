"""The prep CXR encoder is reproducible (issue 12 §3) and declares what its weights saw (issue 17 §5)."""

import logging

import numpy as np
import pytest
import torch

from toy_cxr import FINDINGS, make_toy_cxr
from mmfair.core.config import PrepConfig
from mmfair.core.data import cxr_encoder
from mmfair.core.data.cxr_encoder import fit_and_embed
from mmfair.core.encoders.cxr import build_cxr_backbone

LOGGER = "mmfair.core.data.cxr_encoder"


def _cfg(**kw):
    base = dict(cxr_encoder="test_resnet", encoder_image_size=32, encoder_max_steps=6, encoder_threads=1)
    return PrepConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def small():
    imgs, labels, subjects = make_toy_cxr(240, size=40, seed=2)
    return imgs, labels, subjects, make_toy_cxr(12, size=40, seed=6)[0]


class _SlowClock:
    """A machine 1,000x slower: every reading of the clock is 100 s later than the last."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 100.0
        return self.now


def test_default_stops_on_steps_not_seconds():
    cfg = PrepConfig()
    assert cfg.encoder_time_budget_s is None and cfg.encoder_max_steps == 400 and cfg.encoder_threads == 2


def test_same_seed_bit_identical_weights_and_embeddings_on_any_machine(small, monkeypatch):
    imgs, labels, subjects, cohort = small
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    a = fit_and_embed(imgs, labels, subjects, FINDINGS, cohort, _cfg(), device="cpu", seed=3)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before  # restored
    # a second "machine": 1,000x slower clock, another thread setting and another global RNG state outside
    monkeypatch.setattr(cxr_encoder, "time", _SlowClock())
    torch.set_num_threads(2 if before[0] == 1 else 1)
    torch.manual_seed(12345)
    try:
        b = fit_and_embed(imgs, labels, subjects, FINDINGS, cohort, _cfg(), device="cpu", seed=3)
    finally:
        torch.set_num_threads(before[0])
    assert a.attrs["steps"] == b.attrs["steps"] == 6 and a.attrs["stopped_by"] == "max_steps"
    assert a.backbone_state.keys() == b.backbone_state.keys()
    for name, value in a.backbone_state.items():
        np.testing.assert_array_equal(value, b.backbone_state[name], err_msg=name)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.encoder_id == b.encoder_id and a.heldout_auroc == b.heldout_auroc
    # the weights did train: they are not the seeded initial ones
    torch.manual_seed(3)
    init = build_cxr_backbone("test_resnet", None, 32).model.state_dict()
    assert any(not np.array_equal(init[k].numpy(), v) for k, v in a.backbone_state.items())


def test_steps_and_budget_are_part_of_the_encoder_id(small):
    imgs, labels, subjects, cohort = small
    ids = {fit_and_embed(imgs, labels, subjects, FINDINGS, cohort, cfg, device="cpu").encoder_id
           for cfg in (_cfg(), _cfg(encoder_max_steps=5), _cfg(encoder_time_budget_s=600.0))}
    assert len(ids) == 3


def _external(tmp_path, small, caplog, **cfg):
    imgs, labels, subjects, cohort = small
    torch.manual_seed(4)
    path = tmp_path / "w.pth"
    torch.save(build_cxr_backbone("test_resnet", None, 32).model.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        return fit_and_embed(imgs, labels, subjects, FINDINGS, cohort, _cfg(cxr_weights=path, **cfg), device="cpu")


def test_weights_that_saw_mimic_cxr_are_warned_about_loudly(tmp_path, small, caplog):
    res = _external(tmp_path, small, caplog, cxr_pretraining="MIMIC-CXR, CheXpert, NIH, PadChest, BRAX (RAD-DINO)")
    loud = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "PROVENANCE" in r.getMessage()]
    assert len(loud) == 1 and "MIMIC-CXR" in loud[0] and "test patients" in loud[0]
    assert res.attrs["pretraining_mimic_cxr"] == "yes" and res.card.mimic_cxr == "yes"
    assert res.attrs["pretraining_data"].startswith("MIMIC-CXR, CheXpert")
    assert "test patients" in res.attrs["provenance_warning"]


def test_weights_declared_without_mimic_cxr_are_not_warned_about(tmp_path, small, caplog):
    res = _external(tmp_path, small, caplog, cxr_pretraining="ImageNet-1k")
    assert not [r for r in caplog.records if "provenance" in r.getMessage().lower()]
    assert res.attrs["pretraining_mimic_cxr"] == "none" and res.attrs["provenance_warning"] == ""
