import json
import logging
import math
import re

import numpy as np
import pytest
import torch

from toy_cxr import FINDINGS, make_toy_cxr
from mmfair.core.config import PrepConfig
from mmfair.core.data.cxr_encoder import EncoderResult, fit_and_embed
from mmfair.core.encoders.cxr import build_cxr_backbone, resize_uint8, to_input


def _cfg(**kw):
    base = dict(cxr_encoder="test_resnet", encoder_image_size=32, encoder_max_epochs=3, encoder_threads=1,
                workers=1)  # 1 thread: robust to a busy machine
    base.update(kw)
    return PrepConfig(**base)


def _cohort(n=24, size=40, seed=5):
    return make_toy_cxr(n, size=size, seed=seed)[0]


@pytest.fixture(scope="module")
def trained(toy_set):
    imgs, labels, subjects = toy_set
    cohort = _cohort()
    res = fit_and_embed(imgs, labels, subjects, FINDINGS, cohort, _cfg(encoder_max_epochs=10), device="cpu")
    return res, cohort


def test_shapes_dtypes_and_attrs(trained, toy_set):
    res, cohort = trained
    assert isinstance(res, EncoderResult)
    assert res.embeddings.dtype == np.float16
    assert res.embeddings.shape == (len(cohort), build_cxr_backbone("test_resnet", None, 32).num_features)
    assert np.isfinite(res.embeddings).all()
    assert not res.random_init
    assert re.fullmatch(r"test_resnet-32-[0-9a-f]{8}", res.encoder_id)
    a = res.attrs
    json.dumps(a)  # JSON-serialisable as a whole
    assert all(isinstance(v, (str, int, float, bool)) for v in a.values())
    assert a["model"] == "test_resnet" and a["weights"] == "trained-on-noncohort" and a["image_size"] == 32
    assert a["n_train_images"] == len(toy_set[0]) and len(a["train_subjects_hash"]) == 64
    assert a["n_fit_images"] + a["n_heldout_images"] == len(toy_set[0])
    assert 0 < a["epochs_run"] <= 10 and 1 <= a["best_epoch"] <= 10
    # 320 fit images (80 % of 200 subjects) → 5 steps an epoch; the 10-epoch cap comes before 400 steps
    assert a["steps"] == 50 and a["stopped_by"] == "max_epochs" and a["time_budget_s"] == 0.0
    assert a["pretraining_data"] == "non-cohort MIMIC-CXR subjects only"
    assert a["pretraining_mimic_cxr"] == "non-cohort" and a["provenance_warning"] == ""
    auroc = json.loads(a["heldout_auroc"])
    assert set(auroc) == set(FINDINGS) == set(res.heldout_auroc)
    assert a["norm_std"] > 0 and 0 < a["norm_mean"] < 1


def test_learns_an_easy_planted_finding(trained):
    res, _ = trained
    # the thick device line is easy at 32 px; a random network sits near 0.5
    assert res.heldout_auroc["Support Devices"] > 0.8, res.heldout_auroc


def test_heldout_split_is_by_subject(toy_set):
    from mmfair.core.data.cxr_encoder import _split_subjects

    _, _, subjects = toy_set
    held = _split_subjects(subjects, 0)
    assert not set(subjects[held]) & set(subjects[~held])
    assert 0.15 < held.mean() < 0.25


def test_same_seed_same_embeddings_and_cohort_is_never_trained_on(toy_set):
    imgs, labels, subjects = toy_set[0][:240], toy_set[1][:240], toy_set[2][:240]
    cfg = _cfg(encoder_max_epochs=2)
    shared = imgs[:16]  # training images, embedded too: they must come out the same
    a = np.concatenate([shared, _cohort(8, size=48)])
    # an impossible pattern in the rest of the cohort: if training saw it, the weights would differ
    checker = ((np.indices((48, 48)).sum(0) % 2) * 255).astype(np.uint8)
    b = np.concatenate([shared, np.broadcast_to(checker, (30, 48, 48))])
    ra = fit_and_embed(imgs, labels, subjects, FINDINGS, a, cfg, device="cpu", seed=3)
    rb = fit_and_embed(imgs, labels, subjects, FINDINGS, b, cfg, device="cpu", seed=3)
    np.testing.assert_array_equal(ra.embeddings[:16], rb.embeddings[:16])
    assert ra.heldout_auroc == rb.heldout_auroc
    assert ra.encoder_id == rb.encoder_id
    rc = fit_and_embed(imgs, labels, subjects, FINDINGS, a, cfg, device="cpu", seed=4)
    assert not np.array_equal(ra.embeddings, rc.embeddings)


def test_time_budget_is_respected(toy_set, caplog):
    imgs, labels, subjects = toy_set
    with caplog.at_level(logging.WARNING, logger="mmfair.core.data.cxr_encoder"):
        res = fit_and_embed(imgs, labels, subjects, FINDINGS, _cohort(), _cfg(encoder_time_budget_s=1.5,
                            encoder_max_epochs=1000, encoder_max_steps=100_000), device="cpu")
    assert any("depend on the machine" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert res.attrs["stopped_by"] == "time_budget"
    assert res.seconds < 1.5 + 2.0, res.seconds
    assert res.attrs["epochs_run"] < 1000


@pytest.mark.parametrize("case", ["few_images", "one_subject", "no_positives"])
def test_random_init_fallback(toy_set, caplog, case):
    imgs, labels, subjects = (a.copy() for a in toy_set)
    if case == "few_images":
        imgs, labels, subjects = imgs[:50], labels[:50], subjects[:50]
    elif case == "one_subject":
        subjects[:] = 7
    else:
        labels[labels == 1] = 0
    cohort = _cohort()
    with caplog.at_level(logging.WARNING, logger="mmfair.core.data.cxr_encoder"):
        res = fit_and_embed(imgs, labels, subjects, FINDINGS, cohort, _cfg(), device="cpu")
    assert res.random_init
    assert any("random-init" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert res.attrs["weights"] == "random-init" and res.attrs["random_init"] is True
    assert res.attrs["fallback_reason"]
    assert res.attrs["train_subjects_hash"] == "" and res.attrs["n_train_images"] == 0
    assert all(math.isnan(v) for v in res.heldout_auroc.values())
    assert json.loads(res.attrs["heldout_auroc"]) == {f: None for f in FINDINGS}
    assert res.embeddings.shape[0] == len(cohort) and res.embeddings.dtype == np.float16
    assert np.isfinite(res.embeddings).all() and res.embeddings.std() > 0
    again = fit_and_embed(imgs, labels, subjects, FINDINGS, cohort, _cfg(), device="cpu")
    np.testing.assert_array_equal(res.embeddings, again.embeddings)


def test_external_weights_are_embedded_only(tmp_path, toy_set, caplog):
    from safetensors.torch import save_file

    torch.manual_seed(9)
    src = build_cxr_backbone("test_resnet", None, 32).eval()
    path = tmp_path / "cxr.safetensors"
    save_file(src.model.state_dict(), str(path))
    imgs, labels, subjects = toy_set
    cohort = _cohort()
    with caplog.at_level(logging.WARNING, logger="mmfair.core.data.cxr_encoder"):
        res = fit_and_embed(imgs, labels, subjects, FINDINGS, cohort, _cfg(cxr_weights=path), device="cpu")
    assert any("may have seen" in r.getMessage() for r in caplog.records)
    assert res.attrs["pretraining_mimic_cxr"] == "unknown" and "not declared" in res.attrs["provenance_warning"]
    assert not res.random_init and res.heldout_auroc == {}
    import hashlib

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert res.attrs["weights"] == sha == res.attrs["weights_sha256"]
    assert res.attrs["epochs_run"] == 0
    with torch.no_grad():
        x = to_input(resize_uint8(torch.from_numpy(cohort), 32), res.attrs["norm_mean"], res.attrs["norm_std"])
        expect = src(x).numpy().astype(np.float16)
    np.testing.assert_allclose(res.embeddings.astype(np.float32), expect.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_empty_cohort_and_progress(toy_set):
    imgs, labels, subjects = toy_set
    calls = []
    res = fit_and_embed(imgs[:60], labels[:60], subjects[:60], FINDINGS, np.zeros((0, 40, 40), np.uint8), _cfg(),
                        device="cpu", progress=lambda d, i, n: calls.append((d, i, n)))
    assert res.embeddings.shape == (0, build_cxr_backbone("test_resnet", None, 32).num_features)
    res = fit_and_embed(imgs[:60], labels[:60], subjects[:60], FINDINGS, _cohort(), _cfg(), device="cpu",
                        progress=lambda d, i, n: calls.append((d, i, n)))
    assert calls and calls[-1][1] == calls[-1][2]


def test_bad_inputs_are_refused(toy_set):
    imgs, labels, subjects = toy_set
    bad = labels.copy()
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match="1, 0, -1 or NaN"):
        fit_and_embed(imgs, bad, subjects, FINDINGS, _cohort(), _cfg(), device="cpu")
    with pytest.raises(ValueError, match="train_labels"):
        fit_and_embed(imgs, labels[:, :2], subjects, FINDINGS, _cohort(), _cfg(), device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        fit_and_embed(imgs.astype(np.float32), labels, subjects, FINDINGS, _cohort(), _cfg(), device="cpu")


def test_no_time_to_train_is_recorded_as_random_init(toy_set, caplog):
    imgs, labels, subjects = toy_set
    with caplog.at_level(logging.WARNING, logger="mmfair.core.data.cxr_encoder"):
        res = fit_and_embed(imgs, labels, subjects, FINDINGS, _cohort(), _cfg(encoder_time_budget_s=0.001),
                            device="cpu")
    assert res.random_init and res.attrs["weights"] == "random-init" and res.attrs["steps"] == 0
    assert any("before the first training step" in r.getMessage() for r in caplog.records)


@pytest.mark.gpu
def test_cuda_mixed_precision(toy_set):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    imgs, labels, subjects = toy_set
    res = fit_and_embed(imgs, labels, subjects, FINDINGS, _cohort(), _cfg(encoder_max_epochs=10), device="cuda")
    assert res.embeddings.dtype == np.float16 and np.isfinite(res.embeddings).all()
    assert res.heldout_auroc["Support Devices"] > 0.8, res.heldout_auroc


def test_missing_weights_file_is_an_input_error(tmp_path, toy_set):
    from mmfair.core.errors import InputFileError

    imgs, labels, subjects = toy_set
    with pytest.raises(InputFileError, match="not found"):
        fit_and_embed(imgs, labels, subjects, FINDINGS, _cohort(), _cfg(cxr_weights=tmp_path / "none.pth"),
                      device="cpu")


@pytest.mark.slow
def test_default_encoder_meets_the_demo_target():
    # the demo's scale: ~1,500 non-cohort images at 128 px, the default model and steps on 2 threads
    imgs, labels, subjects = make_toy_cxr(1500, size=128, seed=11, noise=0.1)
    cfg = PrepConfig()
    res = fit_and_embed(imgs, labels, subjects, FINDINGS, _cohort(64, size=256), cfg, device="cpu")
    assert res.attrs["stopped_by"] == "max_steps" and res.attrs["steps"] == cfg.encoder_max_steps
    assert all(res.heldout_auroc[f] >= 0.75 for f in FINDINGS), res.heldout_auroc
