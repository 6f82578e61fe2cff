"""`train --cxr-input images`: the backbone starts from the store's encoder weights, is fine-tuned through the
method's loss, sees only present images, augments only in training, and round-trips through model.pt."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from tiny_workspace import build_tiny_workspace
from mmfair.core.config import TrainConfig
from mmfair.core.data.store import add_embeddings, read_encoder_weights
from mmfair.core.encoders.cxr import build_cxr_backbone, to_input
from mmfair.core.errors import ConfigError, InputFileError
from mmfair.core.registry import TASKS
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training.data import build_splits, load_store
from mmfair.core.training.runs import build_model, init_image_encoder, resolve_config

MODEL, SIZE, MEAN, STD, ENCODER = "test_efficientnet", 32, 0.45, 0.25, "tiny-img"


@pytest.fixture
def image_ws(tmp_path):
    """The tiny workspace with its embeddings replaced by those of a (random-init, seeded) timm test backbone,
    saved with that backbone's weights and attrs, as prep's encoder stage does."""
    ws = build_tiny_workspace(tmp_path / "ws")
    torch.manual_seed(0)
    backbone = build_cxr_backbone(MODEL, None, SIZE).eval()
    with h5py.File(ws.features_h5, "a") as h5:
        images = h5["cxr/images"][()]
        del h5["cxr/embeddings"]
    with torch.no_grad():
        emb = backbone(to_input(torch.from_numpy(images), MEAN, STD)).numpy()
    weights = {k: v.numpy() for k, v in backbone.model.state_dict().items()}
    add_embeddings(ws.features_h5, ENCODER, emb, {"model": MODEL, "image_size": SIZE, "norm_mean": MEAN,
                                                  "norm_std": STD}, weights=weights)
    return ws


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "patience": 2, "hidden_dim": 16, "batch_size": 32, "device": "cpu",
                          "cxr_input": "images", **kw})


def test_store_keeps_the_encoder_weights(image_ws):
    with h5py.File(image_ws.features_h5, "r") as h5:
        saved = read_encoder_weights(h5, ENCODER)
        assert read_encoder_weights(h5, "other") is None
    torch.manual_seed(0)
    fresh = build_cxr_backbone(MODEL, None, SIZE).model.state_dict()
    assert set(saved) == set(fresh)
    for name, value in fresh.items():
        np.testing.assert_array_equal(saved[name], value.numpy())


def _model_and_splits(ws, fusion="early"):
    store = load_store(ws, images=True)
    cfg = resolve_config(config(fusion=fusion), store)
    task = TASKS.get("mortality")
    splits, scaler = build_splits(store, task, 0, torch.device("cpu"), image_size=SIZE)
    model = build_model(cfg, task, store)
    init_image_encoder(model, cfg, store, scaler)
    return model, splits, scaler, store


def test_at_the_start_image_features_equal_the_standardised_cached_embeddings(image_ws):
    model, splits, scaler, store = _model_and_splits(image_ws)
    split = splits["val"]
    encoder = model.image_encoder.eval()
    with torch.no_grad():
        features = encoder(split.inputs["cxr"], split.present["cxr"])
    present = split.present["cxr"].numpy()
    expected = scaler.transform_cxr(store.cxr_embeddings[store.cxr_row[split.rows[present]]])
    np.testing.assert_allclose(features[present].numpy(), expected, atol=2e-2, rtol=1e-2)  # float16 store
    assert torch.equal(features[~split.present["cxr"]], torch.zeros_like(features[~split.present["cxr"]]))
    assert "encoder:cxr" in model.param_groups()
    backbone_ids = {id(p) for p in encoder.parameters()}
    assert backbone_ids <= {id(p) for p in model.param_groups()["encoder:cxr"]}


def test_placeholder_images_never_change_predictions_and_augmentation_is_training_only(image_ws):
    model, splits, _, _ = _model_and_splits(image_ws)
    batch = splits["val"].batch(slice(0, 20))
    absent = ~batch["present"]["cxr"]
    assert absent.any() and (~absent).any()
    scrambled = {**batch, "inputs": dict(batch["inputs"])}
    images = batch["inputs"]["cxr"].clone()
    images[absent] = 255
    scrambled["inputs"]["cxr"] = images
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(scrambled).logits)
        assert torch.equal(model(batch).logits, model(batch).logits)  # eval: no augmentation
    model.train()
    encoder = model.image_encoder
    with torch.no_grad():
        a = encoder(batch["inputs"]["cxr"], batch["present"]["cxr"])
        b = encoder(batch["inputs"]["cxr"], batch["present"]["cxr"])
    assert not torch.equal(a[~absent], b[~absent])  # random affine + jitter in training


def test_image_mode_run_fine_tunes_the_backbone_and_predicts_as_saved(image_ws):
    result = train_run(config(fusion="early"), image_ws)
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["cxr_input"] == "images" and info["cxr_embedding"] == ENCODER
    run = load_run(result.run_dir)
    with h5py.File(image_ws.features_h5, "r") as h5:
        initial = read_encoder_weights(h5, ENCODER)
    tuned = run.model.image_encoder.backbone.model.state_dict()
    changed = [k for k, v in tuned.items() if v.is_floating_point() and not np.allclose(v.numpy(), initial[k])]
    assert changed  # the backbone learned through the fusion loss
    saved = pd.read_csv(result.run_dir / "predictions_test.csv", keep_default_na=False, na_values=[""])
    np.testing.assert_allclose(predict(run, "test")["score"], saved["score"], rtol=1e-5)
    embeddings_run = train_run(config(fusion="early", cxr_input="embeddings"), image_ws)
    assert embeddings_run.run_id != result.run_id


def test_image_mode_needs_weights_and_ignores_methods_without_a_cxr(image_ws, tmp_path):
    with h5py.File(image_ws.features_h5, "a") as h5:
        del h5["cxr/encoder_weights"]
    with pytest.raises(ConfigError, match="no saved weights.*--cxr-weights"):
        train_run(config(fusion="early"), image_ws)
    with pytest.raises(InputFileError, match="not found"):
        train_run(config(fusion="early", cxr_weights=tmp_path / "nope.pth"), image_ws)
    store = load_store(image_ws)
    assert resolve_config(config(fusion="ehr"), store).cxr_input == "embeddings"
    with pytest.raises(ConfigError, match="images only"):
        resolve_config(config(fusion="early", cxr_input="embeddings", image_size=64), store)


def test_external_weights_start_the_backbone(image_ws, tmp_path):
    torch.manual_seed(7)
    other = build_cxr_backbone(MODEL, None, SIZE)
    path = tmp_path / "weights.pth"
    torch.save(other.model.state_dict(), path)
    with h5py.File(image_ws.features_h5, "a") as h5:
        del h5["cxr/encoder_weights"]
    store = load_store(image_ws, images=True)
    cfg = resolve_config(config(fusion="early", cxr_weights=path), store)
    task = TASKS.get("mortality")
    _, scaler = build_splits(store, task, 0, torch.device("cpu"), image_size=SIZE)
    model = build_model(cfg, task, store)
    init_image_encoder(model, cfg, store, scaler)
    loaded = model.image_encoder.backbone.model.state_dict()
    for name, value in other.model.state_dict().items():
        assert torch.equal(loaded[name], value)


def test_prediction_passes_are_smaller_when_the_split_carries_images(image_ws):
    from mmfair.core.training.trainer import EVAL_BATCH_SIZE, IMAGE_EVAL_BATCH_SIZE, eval_batch_size

    _, splits, _, store = _model_and_splits(image_ws)
    assert eval_batch_size(splits["val"]) == IMAGE_EVAL_BATCH_SIZE
    embedded, _ = build_splits(load_store(image_ws), TASKS.get("mortality"), 0, torch.device("cpu"))
    assert eval_batch_size(embedded["val"]) == EVAL_BATCH_SIZE


def test_the_training_image_size_is_the_stores_and_another_one_is_refused(image_ws):
    """prep stored 32-px images but trained its encoder at 16 px (prep's --image-size vs its encoder size): a run
    trains at the stored 32 px unless told otherwise, records it in its id, and refuses an explicit 16."""
    with h5py.File(image_ws.features_h5, "a") as h5:
        h5[f"cxr/embeddings/{ENCODER}"].attrs["image_size"] = 16
    store = load_store(image_ws)
    assert resolve_config(config(fusion="early"), store).image_size == SIZE
    assert resolve_config(config(fusion="early", image_size=SIZE), store).image_size == SIZE
    with pytest.raises(ConfigError, match=r"image_size 16 differs from the 32-px CXR images") as info:
        resolve_config(config(fusion="early", image_size=16), store)
    assert "\n" not in str(info.value)
    assert resolve_config(config(fusion="ehr"), store).image_size is None  # no CXR branch: embeddings mode
    result = train_run(config(fusion="early", epochs=1), image_ws)
    assert json.loads((result.run_dir / "config.json").read_text())["image_size"] == SIZE
    assert load_run(result.run_dir).model.image_encoder.spec.image_size == SIZE
    assert train_run(config(fusion="early", epochs=1, image_size=SIZE), image_ws).run_id == result.run_id
