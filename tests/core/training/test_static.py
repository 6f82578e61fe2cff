"""The static modality: a whitelist that refuses look-ahead, sensitive fields only when named, an encoder
fitted on the training fold, and every method reading the fields as time-constant EHR channels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training.data import build_splits, load_store
from mmfair.core.training.static import StaticEncoder, check_static_fields, load_whitelist
from mmfair.core.registry import TASKS

WHITELIST = load_whitelist()


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "patience": 2, "hidden_dim": 16, "batch_size": 32, "device": "cpu", **kw})


@pytest.mark.parametrize("field", sorted(WHITELIST.post_window) + ["pheno_shock", "pheno_septicemia"])
def test_fields_known_only_after_the_window_are_refused(field):
    with pytest.raises(ConfigError, match="after the observation window"):
        check_static_fields(["age", field])


def test_defaults_are_admission_time_and_exclude_sensitive_attributes():
    assert set(WHITELIST.defaults) == {"age", "admission_type", "admission_location", "first_careunit"}
    sensitive = {n for n, f in WHITELIST.fields.items() if f.sensitive}
    assert {"gender", "race_group", "insurance_group"} <= sensitive and not sensitive & set(WHITELIST.defaults)
    assert all(f.why and f.known_at for f in WHITELIST.fields.values())  # every choice is stated
    assert check_static_fields(["gender", "age"]) == ("age", "gender")  # named explicitly: accepted
    with pytest.raises(ConfigError, match="not in the whitelist"):
        check_static_fields(["subject_id"])


def test_encoder_learns_only_from_the_training_rows():
    train = pd.DataFrame({"age": [30, 50, 70, np.nan], "admission_type": ["EW", "URGENT", "EW", ""]})
    other = pd.DataFrame({"age": [90, np.nan], "admission_type": ["ELECTIVE", "URGENT"]})
    encoder = StaticEncoder(["age", "admission_type"]).fit(train)
    assert encoder.feature_names_ == ["static:age", "static:admission_type=(missing)", "static:admission_type=EW",
                                      "static:admission_type=URGENT"]
    x = encoder.transform(other)
    assert x[0, 0] == pytest.approx((90 - 50) / 20) and x[1, 0] == 0.0  # training median/IQR; missing = median
    np.testing.assert_array_equal(x[:, 1:], [[0, 0, 0], [0, 0, 1]])  # ELECTIVE unseen in training: all zeros
    again = StaticEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    np.testing.assert_array_equal(again.transform(other), x)


def test_static_channels_reach_the_model_as_always_observed_inputs(tiny_ws):
    store = load_store(tiny_ws)
    fields = ("age", "admission_type")
    splits, scaler = build_splits(store, TASKS.get("mortality"), 0, __import__("torch").device("cpu"), static_fields=fields)
    n_features, width = store.values.shape[2], scaler.static_width
    ehr = splits["val"].inputs["ehr"]
    assert width == 1 + len(set(store.cohort["admission_type"].iloc[splits["train"].rows]))
    assert ehr.shape[2] == 2 * (n_features + width)
    static_values = ehr[:, :, n_features : n_features + width]
    assert bool((static_values == static_values[:, :1]).all())  # constant over the hours
    assert bool((ehr[:, :, -width:] == 1).all())  # observed


@pytest.mark.parametrize("fusion", ["late", "umse"])
def test_a_static_run_trains_records_the_modality_and_predicts_as_saved(tiny_ws, fusion):
    plain = train_run(config(fusion=fusion), tiny_ws)
    result = train_run(config(fusion=fusion, static_fields=("admission_type", "age")), tiny_ws)
    assert result.run_id != plain.run_id
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["static_fields"] == ["age", "admission_type"] and "static" in info["modalities"]
    assert json.loads((result.run_dir / "scaling.json").read_text())["static"]["fields"] == ["age", "admission_type"]
    saved = pd.read_csv(result.run_dir / "predictions_test.csv", keep_default_na=False, na_values=[""])
    np.testing.assert_allclose(predict(load_run(result.run_dir), "test")["score"], saved["score"], rtol=1e-5)


def test_train_refuses_a_look_ahead_field(tiny_ws):
    with pytest.raises(ConfigError, match="after the observation window"):
        train_run(config(fusion="late", static_fields=("mortality",)), tiny_ws)


def test_eval_missing_removes_the_static_fields_of_the_requested_share(tiny_ws):
    from mmfair.core.config import EvalMissingConfig
    from mmfair.core.evaluation import evaluate_missing
    from mmfair.core.pipeline import make_predict_fn

    with_static = train_run(config(fusion="early", static_fields=("age", "admission_type")), tiny_ws)
    plain = train_run(config(fusion="early"), tiny_ws)
    run = load_run(with_static.run_dir)
    rows = run.split("test").rows
    keep = np.ones(len(rows), dtype=bool)
    keep[::2] = False
    full, removed = predict(run, "test"), predict(run, "test", {"static": keep})
    assert (removed.loc[~keep, "present_static"] == 0).all() and (removed.loc[keep, "present_static"] == 1).all()
    np.testing.assert_array_equal(removed.loc[keep, "score"], full.loc[keep, "score"])  # others untouched
    assert not np.allclose(removed.loc[~keep, "score"], full.loc[~keep, "score"])
    result = evaluate_missing([with_static.run_dir, plain.run_dir],
                              EvalMissingConfig(mechanism="mcar", modality="static", rates=(0.5,), bootstrap=20, draws=1),
                              make_predict_fn("cpu"))
    auroc = result[(result["metric"] == "auroc") & (result["label"] == "all")]
    ours = auroc[auroc["run_id"] == with_static.run_id].set_index("missing_rate")
    assert sorted(ours.index) == [0.0, pytest.approx(0.5, abs=0.02)] and ours["defined"].all()
    other = auroc[auroc["run_id"] == plain.run_id]
    assert not other["defined"].any()  # a run without the static modality has nothing to remove: undefined
