"""The predict hook ``ehr_transform``: raw values perturbed before the mask, filling and scaling."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.evaluation.scenarios import EHRPerturbation
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training.runs import _perturbed_split, ehr_features, read_predictions_text

GROUPS = ["vitals", "vitals", "labs", "labs", "neuro"]


@pytest.fixture
def ehr_run(tiny_ws):
    with h5py.File(tiny_ws.features_h5, "a") as h5:
        del h5["ehr/feature_groups"]
        h5["ehr/feature_groups"] = np.array([g.encode() for g in GROUPS])
    cfg = TrainConfig(fusion="early", epochs=2, patience=2, hidden_dim=16, batch_size=32, device="cpu")
    result = train_run(cfg, tiny_ws)
    return result, load_run(result.run_dir)


def test_none_and_identity_leave_predictions_unchanged(ehr_run):
    result, run = ehr_run
    saved = read_predictions_text(result.run_dir / "predictions_test.csv")
    pd.testing.assert_frame_equal(predict(run, "test", ehr_transform=None), saved)
    pd.testing.assert_frame_equal(predict(run, "test", ehr_transform=lambda v, f: v), saved)
    pd.testing.assert_frame_equal(predict(run, "test"), saved)  # the cached split is not perturbed
    assert ehr_features(run).groups == GROUPS


def test_group_removal_is_real_absence_for_the_chosen_stays_only(ehr_run):
    _, run = ehr_run
    base = run.split("test")
    n, f = len(base), len(GROUPS)
    stays = np.zeros(n, dtype=bool)
    stays[::3] = True
    split = _perturbed_split(run, "test", EHRPerturbation("group", stays, groups=("labs",)))
    x, x0 = split.inputs["ehr"].numpy(), base.inputs["ehr"].numpy()
    labs = [2, 3]
    assert (x[stays][:, :, [f + j for j in labs]] == 0).all()  # mask 0: unobserved
    assert (x0[stays][:, :, [f + j for j in labs]] == 1).any()  # ... where some were observed
    # filled with the training-fold median: 0 in scaled units, every hour
    assert (x[stays][:, :, labs] == 0).all()
    scaler = run.scaler.ehr
    np.testing.assert_allclose((scaler.fill_[labs] - scaler.median_[labs]) / scaler.iqr_[labs], 0)
    keep_cols = [j for j in range(2 * f) if j not in labs and j - f not in labs]
    np.testing.assert_array_equal(x[stays][:, :, keep_cols], x0[stays][:, :, keep_cols])
    np.testing.assert_array_equal(x[~stays], x0[~stays])
    # predictions: unchanged for the other stays (eval mode, one stay at a time)
    natural = predict(run, "test")
    out = predict(run, "test", ehr_transform=EHRPerturbation("group", stays, groups=("labs",)))
    np.testing.assert_allclose(out["score"][~stays], natural["score"][~stays], rtol=1e-5)
    assert not np.allclose(out["score"][stays], natural["score"][stays])
    assert (out["present_ehr"] == 1).all()


def test_last_hours_removal_leaves_earlier_hours_untouched(ehr_run):
    _, run = ehr_run
    base = run.split("test")
    stays = np.ones(len(base), dtype=bool)
    split = _perturbed_split(run, "test", EHRPerturbation("last_hours", stays, hours=12))
    x, x0 = split.inputs["ehr"].numpy(), base.inputs["ehr"].numpy()
    f = len(GROUPS)
    np.testing.assert_array_equal(x[:, :36], x0[:, :36])
    assert (x[:, 36:, f:] == 0).all()
    # forward fill carries hour 35's filled value on
    np.testing.assert_array_equal(x[:, 36:, :f], np.repeat(x0[:, 35:36, :f], 12, axis=1))


def test_noise_is_not_absence(ehr_run):
    _, run = ehr_run
    base = run.split("test")
    stays = np.ones(len(base), dtype=bool)
    split = _perturbed_split(run, "test", EHRPerturbation("noise", stays, sd=0.5, seed=1))
    x, x0 = split.inputs["ehr"].numpy(), base.inputs["ehr"].numpy()
    f = len(GROUPS)
    np.testing.assert_array_equal(x[:, :, f:], x0[:, :, f:])  # same mask
    observed = x0[:, :, f:] == 1
    assert (x[:, :, :f][observed] != x0[:, :, :f][observed]).mean() > 0.99


def test_bad_transform_shape_is_an_error(ehr_run):
    _, run = ehr_run
    with pytest.raises(ConfigError, match="shape"):
        predict(run, "test", ehr_transform=lambda v, f: v[:, :10])
