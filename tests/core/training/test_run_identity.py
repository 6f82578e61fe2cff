"""A run's identity covers the content of the data it trained on; damaged run files are refused or restarted.

issue 16 (1a, 4): after prep re-ran its encoder under the same encoder id, ``train`` said "is done;
skipping" and ``eval-missing`` re-scored the old model on the new embeddings; a truncated checkpoint.pt
failed every rerun; a tampered model.pt gave a traceback.
"""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from mmfair.core.config import TrainConfig
from mmfair.core.data.store import CONTENT_ATTR, add_embeddings, array_digest, content_digests
from mmfair.core.errors import InputFileError
from mmfair.core.training import load_run, train_run
from mmfair.core.training.runs import CHECKPOINT, compute_run_id

ENCODER = "test-enc"


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "patience": 2, "hidden_dim": 8, "batch_size": 32, "device": "cpu", **kw})


def reencode(ws, shift: float = 0.5) -> None:
    """What prep's encoder stage does when re-run with other settings under the same encoder id."""
    with h5py.File(ws.features_h5, "r") as f:
        old = f[f"cxr/embeddings/{ENCODER}"][()].astype(np.float32)
    add_embeddings(ws.features_h5, ENCODER, old + shift, {"image_size": 64})


def test_reencoded_embeddings_retrain_and_the_old_run_is_not_rescored(tiny_ws):
    first = train_run(config(fusion="early"), tiny_ws)
    ehr_only = train_run(config(fusion="ehr"), tiny_ws)
    reencode(tiny_ws)
    again = train_run(config(fusion="early"), tiny_ws)
    assert not again.skipped and again.run_id != first.run_id
    with pytest.raises(InputFileError, match=r"not re-scored: /cxr/embeddings changed since it was trained"):
        load_run(first.run_dir)
    load_run(again.run_dir)  # the new run reads the new embeddings
    # the EHR-only method reads no embedding: the new encoder output leaves it done
    assert train_run(config(fusion="ehr"), tiny_ws).skipped
    load_run(ehr_only.run_dir)


def test_recorded_inputs_are_the_store_digests_and_cohort_bytes(tiny_ws):
    result = train_run(config(fusion="late"), tiny_ws)
    inputs = json.loads((result.run_dir / "config.json").read_text())["inputs"]
    with h5py.File(tiny_ws.features_h5, "r") as f:  # the tiny store has no digest attrs: hashed from content
        values = f["ehr/values"][()]
        embeddings = f[f"cxr/embeddings/{ENCODER}"][()]
    assert inputs["ehr_values"] == array_digest(values)
    assert inputs["cxr_embeddings"] == f"{ENCODER}:{array_digest(embeddings)}"
    assert set(inputs) == {"cohort", "ehr_values", "cxr_embeddings"}
    assert compute_run_id(config(fusion="late", cxr_embedding=ENCODER), "tiny-0-120", inputs) == result.run_id


def test_digests_written_by_add_embeddings_change_with_the_content(tiny_ws):
    before = content_digests(tiny_ws.features_h5, ENCODER)["cxr_embeddings"]
    reencode(tiny_ws, shift=0.0)  # same content rewritten: same digest, now read from the attr
    with h5py.File(tiny_ws.features_h5, "r") as f:
        assert f[f"cxr/embeddings/{ENCODER}"].attrs[CONTENT_ATTR] == before
    reencode(tiny_ws, shift=1.0)
    assert content_digests(tiny_ws.features_h5, ENCODER)["cxr_embeddings"] != before


def test_an_edited_cohort_label_retrains(tiny_ws):
    first = train_run(config(fusion="ehr"), tiny_ws)
    cohort = pd.read_csv(tiny_ws.cohort_csv, keep_default_na=False, dtype=str)
    cohort.loc[0, "mortality"] = "1" if cohort.loc[0, "mortality"] == "0" else "0"  # same size, one label flipped
    cohort.to_csv(tiny_ws.cohort_csv, index=False)
    again = train_run(config(fusion="ehr"), tiny_ws)
    assert not again.skipped and again.run_id != first.run_id
    with pytest.raises(InputFileError, match="data/cohort.csv changed"):
        load_run(first.run_dir)


def test_done_folder_whose_record_disagrees_is_retrained(tiny_ws, caplog):
    first = train_run(config(fusion="ehr"), tiny_ws)
    path = first.run_dir / "config.json"
    info = json.loads(path.read_text())
    info["inputs"]["cohort"] = "0" * 16
    path.write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING, logger="mmfair.core.training.runs"):
        again = train_run(config(fusion="ehr"), tiny_ws)
    assert not again.skipped and again.run_id == first.run_id
    assert "data/cohort.csv changed" in caplog.text and "retraining" in caplog.text
    assert json.loads(path.read_text())["inputs"]["cohort"] != "0" * 16


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other-model"])
def test_a_damaged_checkpoint_restarts_the_run_with_a_warning(tiny_ws, caplog, damage):
    first = train_run(config(fusion="ehr"), tiny_ws)
    saved = pd.read_csv(first.run_dir / "predictions_test.csv")
    good = torch.load(first.run_dir / "model.pt", weights_only=True)
    (first.run_dir / "DONE").unlink()
    checkpoint = first.run_dir / CHECKPOINT
    if damage == "truncated":
        torch.save({"model": good}, checkpoint)
        checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    elif damage == "garbage":
        checkpoint.write_bytes(b"not a checkpoint at all")
    else:
        keys = ("model", "optimizer", "generator", "torch_rng", "history", "best_state", "best_score",
                "best_epoch", "stale", "seconds")
        torch.save({k: {"w": torch.zeros(3)} if k == "model" else 0 for k in keys}, checkpoint)
    with caplog.at_level(logging.WARNING, logger="mmfair.core.training.runs"):
        again = train_run(config(fusion="ehr"), tiny_ws)
    assert not again.skipped and str(checkpoint) in caplog.text and "restarting it from epoch 1" in caplog.text
    assert not checkpoint.exists() and (again.run_dir / "DONE").exists()
    pd.testing.assert_frame_equal(pd.read_csv(again.run_dir / "predictions_test.csv"), saved)  # as if never run


@pytest.mark.parametrize("damage", ["truncated", "other-shapes", "pickled-object"])
def test_a_damaged_model_file_is_refused_in_one_line(tiny_ws, damage):
    result = train_run(config(fusion="ehr"), tiny_ws)
    model = result.run_dir / "model.pt"
    if damage == "truncated":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        expected = "unreadable"
    elif damage == "other-shapes":
        state = torch.load(model, weights_only=True)
        torch.save({k: torch.zeros(1) for k in state}, model)
        expected = "not this run's model"
    else:
        torch.save({"weights": logging.getLogger("x")}, model)  # outside the weights-only allowlist
        expected = "unreadable"
    with pytest.raises(InputFileError) as info:
        load_run(result.run_dir)
    message = str(info.value)
    assert message.startswith(str(model)) and expected in message and "\n" not in message


def test_unreadable_config_json_is_one_line(tiny_ws):
    result = train_run(config(fusion="ehr"), tiny_ws)
    (result.run_dir / "config.json").write_text("{not json")
    with pytest.raises(InputFileError, match="config.json: not valid JSON"):
        load_run(result.run_dir)


def test_eval_fair_lists_a_stale_run_as_not_evaluated_and_scores_the_rest(tiny_ws):
    from mmfair.core import pipeline
    from mmfair.core.config import EvalFairConfig
    from mmfair.core.training.runs import stale_reason

    first = train_run(config(fusion="early"), tiny_ws)
    assert stale_reason(first.run_dir, tiny_ws) is None
    reencode(tiny_ws)
    again = train_run(config(fusion="early"), tiny_ws)
    assert "/cxr/embeddings changed" in stale_reason(first.run_dir, tiny_ws)
    rows = pipeline.eval_fair(EvalFairConfig(attributes=("gender",), bootstrap=5, permutations=0, reference=None,
                                             device="cpu"), tiny_ws)
    assert set(rows["run_id"]) == {again.run_id}
    costs = pd.read_csv(tiny_ws.metrics_csv)
    timed = costs.loc[costs["metric"] == "infer_stays_per_s", "run_id"]
    assert set(timed) == {again.run_id}  # the stale run is neither scored nor loaded to be timed
    (failed,) = rows.attrs[pipeline.NOT_EVALUATED]
    assert failed[0] == first.run_id and "not re-scored: /cxr/embeddings changed" in failed[1]
