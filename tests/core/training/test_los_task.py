"""The ``los`` task: 7 classes of ``los_class``; metrics against sklearn; an end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from mmfair.core.config import TrainConfig
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training.runs import read_predictions_text
from mmfair.core.training.tasks import get_task, macro_f1, multiclass_metrics


def _probs(rng: np.random.Generator, n: int, k: int = 7) -> np.ndarray:
    z = rng.normal(size=(n, k))
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def test_los_is_registered_as_seven_classes():
    task = get_task("los")
    assert task.kind == "multiclass" and task.column == "los_class" and task.n_classes == 7
    assert task.output_kind == "softmax"
    assert task.n_outputs(["stay_id", "los_class"]) == 7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(7), rng.integers(0, 7, size=193)])  # every class occurs
    p = _probs(rng, y.size)
    p[np.arange(y.size), y] += rng.uniform(0, 0.5, size=y.size)  # some signal
    p /= p.sum(axis=1, keepdims=True)
    pred = p.argmax(axis=1)
    got = get_task("los").metrics(y, p)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert got["kappa"] == pytest.approx(cohen_kappa_score(y, pred, weights="linear"))
    assert got["auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert got["selection"] == got["kappa"]
    # a weighted kappa, not the plain one: the two differ on these arrays
    assert got["kappa"] != pytest.approx(cohen_kappa_score(y, pred))


def test_kappa_keeps_ordinal_distance_when_a_class_is_unseen():
    # classes 0, 1 and 3 only: sklearn without labels= would put 3 next to 1 (index distance 1)
    y = np.array([0, 0, 1, 1, 3, 3, 3, 0])
    pred = np.array([0, 1, 1, 3, 3, 1, 3, 0])
    p = np.eye(7)[pred]
    got = multiclass_metrics(y, p, 7)
    assert got["kappa"] == pytest.approx(cohen_kappa_score(y, pred, labels=np.arange(7), weights="linear"))
    assert got["kappa"] != pytest.approx(cohen_kappa_score(y, pred, weights="linear"))


def test_macro_f1_counts_classes_never_predicted_as_zero():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 0, 2, 2])  # class 1 never predicted: its F1 is 0
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))


def test_undefined_cases_are_nan_not_zero_and_ignore_unscored_rows():
    task = get_task("los")
    empty = task.metrics(np.zeros(0), np.zeros((0, 7)))
    assert all(np.isnan(v) for v in empty.values())
    one_class = multiclass_metrics(np.full(5, 2), np.eye(7)[np.full(5, 2)], 7)
    assert np.isnan(one_class["kappa"]) and np.isnan(one_class["auroc"]) and one_class["accuracy"] == 1.0
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, size=60)
    p = _probs(rng, 60)
    with_nan = np.vstack([p, np.full((5, 7), np.nan)])
    got, expected = task.metrics(np.r_[y, np.zeros(5, dtype=int)], with_nan), task.metrics(y, p)
    assert got.keys() == expected.keys()
    for key in got:
        assert got[key] == expected[key] or (np.isnan(got[key]) and np.isnan(expected[key]))


@pytest.mark.parametrize("fusion", ["early", "attention", "medfuse", "utde", "daft"])
def test_los_run_trains_end_to_end_and_writes_class_probabilities(tiny_ws, fusion):
    epochs = 2 if fusion == "early" else 1
    cfg = TrainConfig(fusion=fusion, task="los", epochs=epochs, patience=2, hidden_dim=16, batch_size=32, device="cpu")
    result = train_run(cfg, tiny_ws)
    history = pd.read_csv(result.run_dir / "history.csv")
    assert "val_kappa" in history.columns and history["val_auroc"].notna().all()
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["task"] == "los"
    cohort = pd.read_csv(tiny_ws.cohort_csv)
    for split in ("val", "test"):
        saved = read_predictions_text(result.run_dir / f"predictions_{split}.csv")
        scores = [f"score_{k}" for k in range(7)]
        assert list(saved.columns[:3]) == ["stay_id", "fold", "label"] and list(saved.columns[3:10]) == scores
        scored = saved[scores].notna().all(axis=1)
        assert (saved[scores].notna().any(axis=1) == scored).all()  # a row is scored in full or not at all
        if fusion == "daft":  # needs the CXR: empty scores without one
            assert (scored == (saved["present_cxr"] == 1)).all()
        else:
            assert scored.all()
        np.testing.assert_allclose(saved.loc[scored, scores].sum(axis=1), 1.0, atol=1e-5)
        expected = cohort.set_index("stay_id").loc[saved["stay_id"], "los_class"].to_numpy()
        np.testing.assert_array_equal(saved["label"].to_numpy(), expected)
    saved_test = read_predictions_text(result.run_dir / "predictions_test.csv")
    pd.testing.assert_frame_equal(predict(load_run(result.run_dir), "test"), saved_test)
