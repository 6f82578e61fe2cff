"""Run folders, skip on rerun, predict == saved predictions, determinism, absent-modality outputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mmfair.core.config import TrainConfig
from mmfair.core.errors import InputFileError
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training.run_files import RUN_FILES
from mmfair.core.training.runs import compute_run_id, read_predictions_text

ATTRS = ["subject_id", "gender", "age_group", "race_group", "insurance_group", "language_group",
         "marital_status", "admission_type", "anchor_year_group"]


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "patience": 2, "hidden_dim": 16, "batch_size": 32, "device": "cpu", **kw})


@pytest.mark.parametrize("fusion", ["ehr", "cxr", "late", "early"])
def test_run_folder_contents_and_predict_matches_saved(tiny_ws, fusion, monkeypatch):
    monkeypatch.setattr("mmfair.core.training.selection.MIN_GROUP_SIZE", 1)  # the tiny fold's groups are small
    result = train_run(config(fusion=fusion), tiny_ws)
    assert not result.skipped
    assert sorted(p.name for p in result.run_dir.iterdir()) == sorted(RUN_FILES)
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["run_id"] == result.run_id and info["method"] == fusion
    assert info["store_fingerprint"] == "tiny-0-120" and info["cxr_embedding"] == "test-enc"
    for key in ("modalities", "handles_missing", "mmfair_version", "train_cohort", "split", "modality_dropout",
                "train_missing_rate", "train_cxr_missing_share", "fusion_params", "missing_token", "n_params"):
        assert key in info
    history = pd.read_csv(result.run_dir / "history.csv")
    assert list(history.columns[:7]) == ["epoch", "train_loss", "val_loss", "val_auroc", "val_auprc", "seconds", "peak_memory_mb"]
    assert any(c.startswith("val_auroc[race_group=") for c in history.columns)
    thresholds = json.loads((result.run_dir / "threshold.json").read_text())
    assert set(thresholds) == {"val-youden", "0.5"} and thresholds["0.5"] == {"all": 0.5}

    run = load_run(result.run_dir)
    for split in ("val", "test"):
        saved = read_predictions_text(result.run_dir / f"predictions_{split}.csv")
        assert list(saved.columns) == ["stay_id", "fold", "label", "score", *ATTRS, "present_ehr", "present_cxr"]
        pd.testing.assert_frame_equal(predict(run, split), saved)
    test = pd.read_csv(result.run_dir / "predictions_test.csv")
    assert (test["fold"] == 0).all()
    scored = test["score"].notna()
    assert ((test.loc[scored, "score"] >= 0) & (test.loc[scored, "score"] <= 1)).all()
    if fusion == "cxr":
        assert (scored == (test["present_cxr"] == 1)).all()  # empty score without an image
    else:
        assert scored.all()


def test_rerun_is_skipped_and_run_id_ignores_machine_fields(tiny_ws):
    first = train_run(config(fusion="ehr"), tiny_ws)
    mtime = (first.run_dir / "model.pt").stat().st_mtime_ns
    again = train_run(config(fusion="ehr", workers=3), tiny_ws)
    assert again.skipped and again.run_id == first.run_id
    assert (first.run_dir / "model.pt").stat().st_mtime_ns == mtime
    inputs = json.loads((first.run_dir / "config.json").read_text())["inputs"]
    assert compute_run_id(config(fusion="ehr", cxr_embedding="test-enc"), "tiny-0-120", inputs) == first.run_id
    assert compute_run_id(config(fusion="ehr", cxr_embedding="test-enc"), "other-store", inputs) != first.run_id
    assert train_run(config(fusion="ehr", seed=1), tiny_ws).run_id != first.run_id


def test_same_seed_gives_identical_predictions_on_cpu(tiny_ws):
    first = train_run(config(fusion="early"), tiny_ws)
    saved = pd.read_csv(first.run_dir / "predictions_test.csv")
    weights = torch.load(first.run_dir / "model.pt", weights_only=True)
    shutil.rmtree(first.run_dir)
    second = train_run(config(fusion="early"), tiny_ws)
    assert not second.skipped and second.run_id == first.run_id
    pd.testing.assert_frame_equal(pd.read_csv(second.run_dir / "predictions_test.csv"), saved)
    again = torch.load(second.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_unfinished_run_is_retrained(tiny_ws):
    first = train_run(config(fusion="ehr"), tiny_ws)
    (first.run_dir / "DONE").unlink()
    assert not train_run(config(fusion="ehr"), tiny_ws).skipped


def test_late_falls_back_to_ehr_only_probability(tiny_ws):
    late = load_run(train_run(config(fusion="late"), tiny_ws).run_dir)
    natural = predict(late, "test")
    removed = predict(late, "test", {"cxr": np.zeros(len(natural), dtype=bool)})
    assert (removed["present_cxr"] == 0).all() and removed["score"].notna().all()
    # EHR-only probability = sigmoid of the EHR branch
    split = late.split("test")
    with torch.no_grad():
        ehr_logits = late.model.heads["ehr"](late.model.encoders["ehr"](split.inputs["ehr"]))
    np.testing.assert_allclose(removed["score"], torch.sigmoid(ehr_logits).numpy().ravel(), rtol=1e-6)
    without = natural["present_cxr"] == 0
    assert without.any() and (natural.loc[without, "score"] == removed.loc[without, "score"]).all()
    assert (natural.loc[~without, "score"] != removed.loc[~without, "score"]).any()


def test_override_is_anded_with_natural_presence(tiny_ws):
    run = load_run(train_run(config(fusion="cxr"), tiny_ws).run_dir)
    natural = predict(run, "val")
    keep = np.ones(len(natural), dtype=bool)
    keep[::2] = False
    out = predict(run, "val", {"cxr": keep})
    assert (out["present_cxr"] == (natural["present_cxr"].astype(bool) & keep)).all()
    assert out["score"].notna().sum() == out["present_cxr"].sum()
    with pytest.raises(Exception, match="values"):
        predict(run, "val", {"cxr": keep[:-1]})


def test_phenotype_run(tiny_ws):
    result = train_run(config(fusion="early", task="phenotype", epochs=2), tiny_ws)
    saved = read_predictions_text(result.run_dir / "predictions_test.csv")
    assert "label_acute_renal_failure" in saved and "score_shock" in saved
    thresholds = json.loads((result.run_dir / "threshold.json").read_text())
    assert len(thresholds["val-youden"]) == 25
    pd.testing.assert_frame_equal(predict(load_run(result.run_dir), "test"), saved)


def test_planted_signal_is_learned(tiny_ws):
    result = train_run(config(fusion="early", epochs=25, patience=25, lr=3e-3), tiny_ws)
    history = pd.read_csv(result.run_dir / "history.csv")
    assert history["val_auroc"].max() > 0.8


def test_progress_is_reported_per_epoch(tiny_ws):
    calls = []
    train_run(config(fusion="ehr", epochs=2, patience=5), tiny_ws, progress=lambda d, done, total: calls.append((done, total)))
    assert calls == [(0, 2), (1, 2), (2, 2)]


def test_multiclass_task_outputs():
    from mmfair.core.training.tasks import Task

    task = Task("los", "multiclass", column="los_class", n_classes=3)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 1])
    assert task.loss(logits, labels).item() > 0
    probs = task.probabilities(logits).numpy()
    frame = task.prediction_frame(labels.numpy(), probs, ["los_class"])
    assert list(frame.columns) == ["label", "score_0", "score_1", "score_2"]
    np.testing.assert_allclose(frame[["score_0", "score_1", "score_2"]].sum(axis=1), 1.0, rtol=1e-6)
    assert task.metrics(labels.numpy(), probs)["selection"] == pytest.approx(1.0)


def test_store_without_embeddings_trains_ehr_and_refuses_cxr(tiny_ws):
    import h5py

    from mmfair.core.errors import ConfigError

    with h5py.File(tiny_ws.features_h5, "a") as h5:
        del h5["cxr/embeddings/test-enc"]
    result = train_run(config(fusion="ehr", epochs=1), tiny_ws)
    assert json.loads((result.run_dir / "config.json").read_text())["cxr_embedding"] is None
    with pytest.raises(ConfigError, match="CXR embeddings"):
        train_run(config(fusion="late", epochs=1), tiny_ws)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_with_amp_matches_its_saved_predictions(tiny_ws):
    result = train_run(config(fusion="late", device="cuda"), tiny_ws)
    run = load_run(result.run_dir, device="cuda")
    saved = read_predictions_text(result.run_dir / "predictions_test.csv")
    pd.testing.assert_frame_equal(predict(run, "test"), saved)


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_result(tiny_ws, tmp_path):
    from tiny_workspace import build_tiny_workspace

    other = build_tiny_workspace(tmp_path / "other")
    reference = train_run(config(fusion="late", epochs=4, patience=10), other)

    def stop_after_two(description, done, total):
        if done == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_run(config(fusion="late", epochs=4, patience=10), tiny_ws, progress=stop_after_two)
    run_dir = tiny_ws.runs / reference.run_id
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "DONE").exists()
    done = []
    resumed = train_run(config(fusion="late", epochs=4, patience=10), tiny_ws, progress=lambda d, i, n: done.append(i))
    assert done == [2, 3, 4] and not (run_dir / "checkpoint.pt").exists()
    pd.testing.assert_frame_equal(
        pd.read_csv(resumed.run_dir / "predictions_test.csv"), pd.read_csv(reference.run_dir / "predictions_test.csv")
    )
    hist_a = pd.read_csv(resumed.run_dir / "history.csv")
    hist_b = pd.read_csv(reference.run_dir / "history.csv")
    pd.testing.assert_frame_equal(hist_a[["epoch", "train_loss", "val_loss", "val_auprc"]],
                                  hist_b[["epoch", "train_loss", "val_loss", "val_auprc"]])


def test_late_fusion_keeps_each_branch_at_its_own_best_epoch(tiny_ws):
    from mmfair.core.training.trainer import branch_scores

    result = train_run(config(fusion="late", epochs=8, patience=8), tiny_ws)
    history = pd.read_csv(result.run_dir / "history.csv")
    run = load_run(result.run_dir, device="cpu")
    val = run.split("val")
    final = branch_scores(run.model, run.task, val, torch.device("cpu"))
    for branch in ("ehr", "cxr"):
        column = history[f"val_selection[branch={branch}]"]
        # the saved weights of each branch score exactly its best epoch's validation value
        assert final[branch] == pytest.approx(column.max(), abs=1e-9)


def test_compile_is_a_machine_field_and_a_no_op_on_cpu(tiny_ws):
    eager = train_run(config(fusion="early"), tiny_ws)
    compiled = train_run(config(fusion="early", compile=True), tiny_ws)
    assert compiled.run_id == eager.run_id and compiled.skipped  # same run: compile changes no result


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_cuda_run_trains_and_matches_its_saved_predictions(tiny_ws):
    result = train_run(config(fusion="early", device="cuda", compile=True), tiny_ws)
    run = load_run(result.run_dir, device="cuda")
    saved = read_predictions_text(result.run_dir / "predictions_test.csv")
    pd.testing.assert_frame_equal(predict(run, "test"), saved)


def test_a_run_written_by_an_older_mmfair_is_refused_in_one_line_naming_its_config(tiny_ws):
    result = train_run(config(fusion="cxr"), tiny_ws)
    path = result.run_dir / "config.json"
    info = json.loads(path.read_text())
    info.update(train_cohort="paired", protocol=1)  # "paired": what mmfair 0.1's first runs called "matched"
    path.write_text(json.dumps(info))
    with pytest.raises(InputFileError) as err:
        load_run(result.run_dir)
    assert str(err.value).startswith(f"{path}: not a valid run config") and "\n" not in str(err.value)
