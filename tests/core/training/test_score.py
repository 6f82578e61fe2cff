"""`mmfair score`: another tool's predictions scored like a run (reproduces eval-fair exactly), and every refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tiny_workspace import build_tiny_workspace
from mmfair.cli.app import app
from mmfair.core import pipeline
from mmfair.core.config import EvalFairConfig, TrainConfig
from mmfair.core.errors import InputFileError
from mmfair.core.evaluation.score import ScoreConfig, score_predictions
from mmfair.core.evaluation.tidy import read_results

BOOT = 50
FAIR = dict(bootstrap=BOOT, seed=0, reference="late", permutations=20, time_inference=False, min_group_size=1)
VALUE = ["value", "ci_low", "ci_high", "n", "n_pos", "defined"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny workspace with an `ehr` and a `late` run on fold 0, clean metrics and eval-fair rows written."""
    ws = build_tiny_workspace(tmp_path_factory.mktemp("score") / "ws")
    cfgs = [TrainConfig(fusion=f, epochs=2, patience=2, hidden_dim=8, batch_size=32, device="cpu") for f in ("ehr", "late")]
    out = pipeline.train(cfgs, ws, bootstrap=BOOT)
    pipeline.eval_fair(EvalFairConfig(**FAIR), ws)
    return ws, {r.run_dir.name: r.run_dir for r in out.runs}


def _external_csv(run_dir: Path, path: Path) -> Path:
    val = pd.read_csv(run_dir / "predictions_val.csv").assign(split="val")
    test = pd.read_csv(run_dir / "predictions_test.csv").assign(split="test")
    pd.concat([val, test]).to_csv(path, index=False, float_format="%.9g")
    return path


def _rows(table: pd.DataFrame, run_id: str, keys: list[str]) -> pd.DataFrame:
    part = table[table["run_id"] == run_id]
    part = part[~part["metric"].isin(["n_params", "train_seconds", "peak_memory_mb", "infer_stays_per_s",
                                      "selected_epoch"])]
    return part.set_index(keys)[VALUE].sort_index()


def test_score_reproduces_train_and_eval_fair_exactly(trained, tmp_path):
    ws, runs = trained
    ehr_dir = next(d for d in runs.values() if '"fusion": "ehr"' in (d / "config.json").read_text())
    path = _external_csv(ehr_dir, tmp_path / "ehr_preds.csv")
    outcome = score_predictions(path, ws, ScoreConfig(name="mine", task="mortality", **FAIR))
    assert outcome.comparable and outcome.fold == 0

    metrics = read_results(ws.metrics_csv)
    keys = ["metric", "label", "evaluated_on"]
    ours, theirs = _rows(metrics, "external-mine", keys), _rows(metrics, ehr_dir.name, keys)
    assert len(ours) >= 6 and ours.index.equals(theirs.index)
    pd.testing.assert_frame_equal(ours, theirs)  # exact: same stays, thresholds, bootstrap replicates

    fairness = read_results(ws.fairness_csv)
    keys = ["metric", "label", "attribute", "group", "evaluated_on", "threshold_rule"]
    ours, theirs = _rows(fairness, "external-mine", keys), _rows(fairness, ehr_dir.name, keys)
    assert "auroc_difference" in set(ours.index.get_level_values("metric"))  # compared with late: same stays
    assert len(ours) > 50 and ours.index.equals(theirs.index)
    pd.testing.assert_frame_equal(ours, theirs)
    assert set(metrics.loc[metrics.run_id == "external-mine", "method"]) == {"external:mine"}


def test_score_cli_refuses_with_one_line(trained, tmp_path):
    ws, runs = trained
    base = pd.read_csv(_external_csv(next(iter(runs.values())), tmp_path / "p.csv"))
    val_ids = base.loc[base.split == "val", "stay_id"]
    cases = {
        "column 'split' is missing": base.drop(columns="split"),
        "no score columns": base.drop(columns="score"),
        "task 'phenotype' needs columns": base,
        "column 'stay_id' is missing": base.drop(columns=["stay_id", "subject_id"]),
        "looks like logits": base.assign(score=np.log(base.score / (1 - base.score))),
        "above 1": base.assign(score=base.score * 100),
        "appears 2 times (splits test, val)": pd.concat([base, base[base.split == "val"].head(1).assign(split="test")]),
        "is not in cohort.csv": base.assign(stay_id=base.stay_id + 10_000),
        "no 'val' rows": base[base.split == "test"],
        "must hold val or test": base.assign(split=np.where(base.split == "val", "valid", "test")),
        "must hold 0/1 labels": base.assign(label=2),
    }
    assert len(val_ids)
    for expected, frame in cases.items():
        path = tmp_path / "bad.csv"
        frame.to_csv(path, index=False)
        task = "phenotype" if "phenotype" in expected else "mortality"
        result = CliRunner().invoke(app, ["--workspace", str(ws.root), "score", str(path), "--name", "bad",
                                          "--bootstrap", "0", "--task", task])  # fmt: skip
        assert result.exit_code == 2, (expected, result.output)
        assert expected in result.output and "Traceback" not in result.output, (expected, result.output)


def test_subset_of_a_fold_is_kept_apart_and_cxr_stays_match_like_the_cxr_method(trained, tmp_path):
    ws, runs = trained
    late = next(d for d in runs.values() if '"fusion": "late"' in (d / "config.json").read_text())
    frame = pd.read_csv(_external_csv(late, tmp_path / "p.csv"))
    cfg = dict(task="mortality", bootstrap=0, reference=None, min_group_size=1)

    partial = frame.drop(index=frame.index[frame.split == "test"][:3])  # three test stays missing
    partial.to_csv(tmp_path / "partial.csv", index=False)
    out = score_predictions(tmp_path / "partial.csv", ws, ScoreConfig(name="partial", **cfg))
    assert not out.comparable and "neither all" in out.reason
    assert "external-partial" not in set(read_results(ws.metrics_csv).run_id)
    kept = read_results(ws.results / "external.csv")
    auroc = kept[(kept.run_id == "external-partial") & (kept.metric == "auroc") & (kept.evaluated_on == "all")]
    assert int(auroc.n.iloc[0]) == int((partial.split == "test").sum())

    only_cxr = frame[(frame.split == "val") | (frame.present_cxr == 1)]
    only_cxr.to_csv(tmp_path / "cxr.csv", index=False)
    out = score_predictions(tmp_path / "cxr.csv", ws, ScoreConfig(name="cxronly", **cfg))
    assert out.comparable and out.fold == 0
    rows = out.metrics[out.metrics.metric == "auroc"].set_index("evaluated_on")
    n_test = int((frame.split == "test").sum())
    assert not rows.loc["all", "defined"] and int(rows.loc["all", "n"]) == n_test  # padded, not scorable
    assert rows.loc["with_cxr", "defined"] and int(rows.loc["with_cxr", "n"]) == int((only_cxr.split == "test").sum())


def test_subject_ids_map_to_stays_only_when_unambiguous(tmp_path):
    ws = build_tiny_workspace(tmp_path / "ws")
    cohort = pd.read_csv(ws.cohort_csv)
    rng = np.random.default_rng(0)
    single = cohort[~cohort.subject_id.duplicated(keep=False)]
    rows = single[single.fold.isin([0, 1])]
    frame = pd.DataFrame({"subject_id": rows.subject_id, "split": np.where(rows.fold == 0, "test", "val"),
                          "label": rows.mortality, "probability": rng.random(len(rows))})  # fmt: skip
    frame.to_csv(tmp_path / "s.csv", index=False)
    out = score_predictions(tmp_path / "s.csv", ws, ScoreConfig(name="subj", bootstrap=0, reference=None))
    assert not out.comparable  # fold 0's subjects with two stays are not in the file
    assert int(out.metrics.loc[out.metrics.metric == "auroc", "n"].iloc[0]) == int((rows.fold == 0).sum())

    twice = cohort[cohort.subject_id.duplicated(keep=False)].iloc[:1]
    bad = pd.concat([frame, pd.DataFrame({"subject_id": twice.subject_id, "split": "test", "label": 0,
                                          "probability": 0.5})])  # fmt: skip
    bad.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(InputFileError, match="has 2 stays in cohort.csv"):
        score_predictions(tmp_path / "b.csv", ws, ScoreConfig(name="subj", bootstrap=0, reference=None))


def test_score_command_in_a_fresh_process(trained, tmp_path):
    """The command registers what it needs itself (no training module imported beforehand)."""
    import subprocess
    import sys

    ws, runs = trained
    path = _external_csv(next(iter(runs.values())), tmp_path / "p.csv")
    done = subprocess.run([sys.executable, "-m", "mmfair", "--workspace", str(ws.root), "score", str(path), "--name",
                           "fresh", "--bootstrap", "0", "--reference", "none"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # rich wraps to the terminal's width
    assert "fresh: test metrics" in text and "comparable with mmfair's runs on cohort fold 0" in text
