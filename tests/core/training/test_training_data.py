"""Fold rule, mask-before-fill, forward fill, scaler fitted on training rows only, store checks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mmfair.core.errors import ConfigError, InputFileError
from mmfair.core.training.data import (EHRScaler, build_splits, fold_rows, forward_fill, load_store, observed_mask,
                                       run_rows, temporal_rows)
from mmfair.core.training.tasks import get_task


def test_fold_rule():
    folds = np.repeat(np.arange(5), 4)
    for k in range(5):
        rows = fold_rows(folds, k, 5)
        assert set(folds[rows["test"]]) == {k}
        assert set(folds[rows["val"]]) == {(k + 1) % 5}
        assert set(folds[rows["train"]]) == set(range(5)) - {k, (k + 1) % 5}
        assert sorted(np.concatenate(list(rows.values()))) == list(range(20))
    with pytest.raises(ConfigError):
        fold_rows(folds, 5, 5)


def test_temporal_rows_follow_the_temporal_split_column():
    side = np.array(["train", "test", "", "train", "test", "train", "train", "", "test", "train"])
    folds = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    rows = temporal_rows(folds, side, fold=0)
    assert rows["test"].tolist() == [1, 4, 8]                 # every test stay, whatever its fold
    assert rows["val"].tolist() == [3]                        # train side, fold 1
    assert rows["train"].tolist() == [0, 5, 6, 9]             # train side, other folds (fold 0 included)
    rows = temporal_rows(folds, side, fold=3)
    assert rows["test"].tolist() == [1, 4, 8] and rows["val"].tolist() == [9] and rows["train"].tolist() == [0, 3, 5, 6]


@pytest.mark.parametrize("side, message", [
    (["train"] * 4 + [""] * 2, "no stay with temporal_split 'test'"),
    (["test"] * 6, "no stay with temporal_split 'train'"),
    (["train", "test", "later", "", "", ""], "'temporal_split' has value 'later'"),
])
def test_temporal_rows_refuse_an_empty_side_or_an_unknown_value(side, message):
    with pytest.raises(ConfigError, match=message) as caught:
        temporal_rows(np.arange(6) % 5, np.array(side, dtype=object), 0)
    assert "\n" not in str(caught.value)


def test_temporal_repeats_share_one_test_set(tiny_ws):
    store = load_store(tiny_ws)
    side = store.cohort["temporal_split"].to_numpy()
    expected = np.flatnonzero(side == "test")
    for k in range(5):
        rows = run_rows(store, k, split_rule="temporal")
        np.testing.assert_array_equal(rows["test"], expected)
        assert (side[rows["train"]] == "train").all() and (side[rows["val"]] == "train").all()
        assert len(rows["train"]) + len(rows["val"]) == int((side == "train").sum())


def test_mask_is_computed_before_filling_and_forward_fill():
    x = np.array([[[np.nan], [1.0], [np.nan], [3.0], [np.nan]]], dtype=np.float32)
    assert observed_mask(x)[0, :, 0].tolist() == [0, 1, 0, 1, 0]
    filled = forward_fill(x)[0, :, 0]
    assert np.isnan(filled[0]) and filled[1:].tolist() == [1, 1, 3, 3]
    scaler = EHRScaler().fit(np.array([[[1.0], [2.0], [3.0], [5.0]]], dtype=np.float32))
    scaled, mask = scaler.transform(x)
    assert mask[0, :, 0].tolist() == [0, 1, 0, 1, 0]  # filled hours stay "not observed"
    # leading gap → training median (2.5) → 0 after scaling; IQR of [1,2,3,5] = 3.5 - 1.75 (linear)
    np.testing.assert_allclose(scaled[0, :, 0], [0.0, (1 - 2.5) / 1.75, (1 - 2.5) / 1.75, (3 - 2.5) / 1.75, (3 - 2.5) / 1.75], rtol=1e-6)


def test_iqr_zero_and_unobserved_features():
    x = np.full((3, 4, 2), np.nan, dtype=np.float32)
    x[:, :, 0] = 7.0
    scaler = EHRScaler(["constant", "never"]).fit(x)
    assert scaler.iqr_.tolist() == [1.0, 1.0]
    assert scaler.median_.tolist() == [7.0, 0.0]
    scaled, _ = scaler.transform(x)
    assert np.isfinite(scaled).all()
    again = EHRScaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(again.transform(x)[0], scaled)


def test_scaler_uses_training_rows_only(tiny_ws):
    store = load_store(tiny_ws)
    task = get_task("mortality")
    _, scaler = build_splits(store, task, 0, torch.device("cpu"))
    rows = fold_rows(store.cohort["fold"].to_numpy(), 0, 5)
    held_out = np.concatenate([rows["val"], rows["test"]])
    train_images = store.cxr_row[rows["train"]]
    original_train_embeddings = store.cxr_embeddings[train_images[train_images >= 0]].copy()
    store.values[held_out] = store.values[held_out] * 100 + 1e4  # change everything outside training
    store.cxr_embeddings[:] = store.cxr_embeddings * 0 + 7.0  # and every embedding
    train_images = store.cxr_row[rows["train"]]
    store.cxr_embeddings[train_images[train_images >= 0]] = original_train_embeddings
    _, scaler2 = build_splits(store, task, 0, torch.device("cpu"))
    for name in ("median_", "iqr_", "fill_"):
        np.testing.assert_array_equal(getattr(scaler.ehr, name), getattr(scaler2.ehr, name))
    for name in ("mean_", "std_"):
        np.testing.assert_array_equal(getattr(scaler.cxr, name), getattr(scaler2.cxr, name))
    expected = EHRScaler().fit(store.values[rows["train"]])
    np.testing.assert_array_equal(scaler.ehr.median_, expected.median_)


def test_splits_hold_values_mask_and_presence(tiny_ws):
    store = load_store(tiny_ws)
    splits, _ = build_splits(store, get_task("mortality"), 2, torch.device("cpu"))
    n_features = store.values.shape[2]
    for split in splits.values():
        assert split.inputs["ehr"].shape == (len(split), 48, 2 * n_features)
        mask = split.inputs["ehr"][:, :, n_features:]
        expected = torch.from_numpy(~np.isnan(store.values[split.rows])).float()
        assert torch.equal(mask, expected)
        present = split.present["cxr"].numpy()
        assert (present == (store.cxr_row[split.rows] >= 0)).all()
        assert (split.inputs["cxr"][~split.present["cxr"]] == 0).all()
        batch = split.batch(torch.tensor([0, 2]))
        assert batch["labels"].shape == (2, 1)
    assert set(store.cohort["fold"].to_numpy()[splits["test"].rows]) == {2}


def test_store_must_match_cohort(tiny_ws):
    with h5py.File(tiny_ws.features_h5, "r+") as h5:
        ids = h5["stay_id"][()]
        ids[[0, 1]] = ids[[1, 0]]
        h5["stay_id"][...] = ids
    with pytest.raises(InputFileError, match="stay_id"):
        load_store(tiny_ws)


def test_unknown_embedding_is_a_config_error(tiny_ws):
    with pytest.raises(ConfigError, match="test-enc"):
        load_store(tiny_ws, "other-enc")


def test_phenotype_task_labels(tiny_ws):
    store = load_store(tiny_ws)
    task = get_task("phenotype")
    cols = list(store.cohort.columns)
    assert task.n_outputs(cols) == 25
    assert task.label_names(cols)[0] == "acute_renal_failure" and task.label_names(cols)[-1] == "shock"
    assert task.label_tensor(store.cohort).shape == (len(store.cohort), 25)


def test_fast_metrics_equal_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from mmfair.core.training.tasks import auroc, average_precision

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(200) < 0.3
        p = np.round(rng.random(200), 1)  # many ties
        assert auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
