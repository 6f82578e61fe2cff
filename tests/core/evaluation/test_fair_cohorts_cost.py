"""Cohort columns (train/test cohort, split, train-time missingness), cost rows, and the gaps' small-cell rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mmfair.core import pipeline
from mmfair.core.config import EvalFairConfig, EvalMissingConfig
from mmfair.core.evaluation import evaluate_fairness, evaluate_missing
from mmfair.core.evaluation.cost import count_parameters, evaluate_cost, time_inference
from mmfair.core.evaluation.run_folder import load_run_info, train_missing_text
from mmfair.core.evaluation.tidy import TIDY_COLUMNS, read_results
from mmfair.core.workspace import Workspace


def _set_config(run, **keys) -> None:
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(keys)
    for k in [k for k, v in keys.items() if v is None]:
        cfg.pop(k)
    (run / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "dropout, rate, text",
    [(None, None, "none"), (0.0, None, "none"), (0.3, None, "dropout=0.3"), (0, 0.5, "rate=0.5"),
     (0.25, 0.5, "dropout=0.25+rate=0.5"), (0.0, 0.0, "none")],
)  # fmt: skip
def test_train_missing_text(dropout, rate, text):
    assert train_missing_text(dropout, rate) == text


def test_old_runs_get_the_defaults_and_new_keys_are_read(make_run):
    old = make_run("old")
    _set_config(old, train_cohort=None, test_cohort=None, train_missing_rate=None)
    info = load_run_info(old)
    assert (info.train_cohort, info.test_cohort, info.split, info.train_missing) == ("full", "full", "random", "none")
    new = make_run("new")
    _set_config(new, train_cohort="matched", split="temporal", modality_dropout=0.3, train_missing_rate=0.5,
                train_cxr_missing_share=0.6)
    rows = evaluate_fairness([new], EvalFairConfig(attributes=("gender",), bootstrap=0, test_cohort="matched"))
    assert tuple(rows.columns) == TIDY_COLUMNS
    assert set(rows.train_cohort) == {"matched"} and set(rows.split) == {"temporal"}
    assert set(rows.train_missing) == {"dropout=0.3+rate=0.5"} and set(rows.test_cohort) == {"matched"}
    assert set(rows.train_missing_rate) == {0.6}  # the tidy column keeps the observed share


def test_before_requested_removal_train_missing_rate_was_an_observation(make_run):
    run = make_run("old")
    _set_config(run, train_missing_rate=0.4)  # no train_cxr_missing_share: the observed share, not a request
    info = load_run_info(run)
    assert info.train_missing == "none" and info.train_missing_rate == 0.4


def test_matched_test_cohort_scores_only_stays_with_a_cxr(make_run):
    run = make_run("r")
    pred = pd.read_csv(run / "predictions_test.csv")
    m = pred.present_cxr == 1
    full = evaluate_fairness([run], EvalFairConfig(attributes=("has_cxr",), bootstrap=0, min_group_size=1))
    matched = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=0, test_cohort="matched",
                                                      min_group_size=1))  # fmt: skip
    f = matched[(matched.metric == "auroc") & (matched.group == "F")].iloc[0]
    sel = m & (pred.gender == "F")
    assert f.n == sel.sum() and f.value == pytest.approx(roc_auc_score(pred.label[sel], pred.score[sel]))
    assert set(full.group[full.metric == "auroc"]) == {"0", "1"}
    assert (matched.missing_rate == 0).all()


def test_eval_missing_matched_cohort_evaluates_only_stays_with_a_cxr(make_run, fake_predict):
    run = make_run("r")
    pred = pd.read_csv(run / "predictions_test.csv")
    cfg = EvalMissingConfig(mechanism="natural", bootstrap=0)
    full = evaluate_missing([run], cfg, fake_predict())
    matched = evaluate_missing([run], cfg.model_copy(update={"test_cohort": "matched"}), fake_predict())
    auroc = lambda rows: rows[(rows.metric == "auroc") & (rows.group == "all")].iloc[0]  # noqa: E731
    assert auroc(full).n == len(pred) and auroc(matched).n == (pred.present_cxr == 1).sum()
    assert set(matched.test_cohort) == {"matched"} and set(full.test_cohort) == {"full"}
    assert auroc(matched).missing_rate == 0.0 and auroc(full).missing_rate > 0


def test_results_written_before_the_new_columns_are_read_with_defaults(tmp_path, make_run):
    rows = evaluate_fairness([make_run("r")], EvalFairConfig(attributes=("gender",), bootstrap=0))
    path = tmp_path / "old.csv"
    rows.drop(columns=["split", "train_missing"]).to_csv(path, index=False)
    back = read_results(path)
    assert tuple(back.columns) == TIDY_COLUMNS
    assert set(back.split) == {"random"} and set(back.train_missing) == {"none"}


def test_small_groups_are_left_out_of_every_gap_but_keep_their_rows(make_run):
    run = make_run("r", n_subjects=300)
    pred = pd.read_csv(run / "predictions_test.csv")
    counts = pred.groupby("race_group")["label"].agg(["size", "sum"])
    smallest_cell = np.minimum(counts["sum"], counts["size"] - counts["sum"])
    k = int(smallest_cell.min()) + 1
    small = list(counts.index[smallest_cell < k])
    assert 1 <= len(small) <= len(counts) - 2
    rows = evaluate_fairness([run], EvalFairConfig(attributes=("race_group",), bootstrap=0, min_group_size=k))
    for g in small:  # the group's own rows stay in the tidy table (the report suppresses them)
        assert rows[(rows.group == g) & (rows.metric == "auroc")].defined.all()
    kept = pred[~pred.race_group.isin(small)]
    aucs = [roc_auc_score(kept.label[kept.race_group == g], kept.score[kept.race_group == g])
            for g in sorted(set(kept.race_group))]  # fmt: skip
    gap = rows[(rows.metric == "auroc_gap") & (rows.group == "all")].iloc[0]
    assert gap.value == pytest.approx(max(aucs) - min(aucs)) and gap.n == len(kept)
    dp = rows[(rows.metric == "demographic_parity_difference")].iloc[0]
    assert dp.n == len(kept)
    everyone = evaluate_fairness([run], EvalFairConfig(attributes=("race_group",), bootstrap=0, min_group_size=1))
    assert everyone[(everyone.metric == "auroc_gap")].iloc[0].n == len(pred)


def test_cost_rows_from_the_run_folder_and_a_timed_predict(make_run, fake_predict):
    run = make_run("r")
    rows = evaluate_cost([run], fake_predict())
    by = rows.set_index("metric")
    assert by.loc["n_params", "value"] == 12345
    assert by.loc["train_seconds", "value"] == pytest.approx(6.0)  # 1.5 + 2.0 + 2.5
    assert by.loc["peak_memory_mb", "value"] == 180.0  # the max over epochs
    assert by.loc["infer_stays_per_s", "value"] > 0 and bool(by.loc["infer_stays_per_s", "higher_is_better"])
    assert set(rows.label) == {"all"} and set(rows.attribute) == {"all"} and set(rows.test_cohort) == {"full"}
    assert "infer_stays_per_s" not in set(evaluate_cost([run]).metric)  # nothing timed without a predict_fn


def test_time_inference_excludes_the_first_call_and_counts_stays(make_run, fake_predict):
    run = make_run("r")
    predict = fake_predict()
    rate = time_inference(run, predict, repeats=3)
    assert len(predict.calls) == 4 and np.isfinite(rate) and rate > 0


def test_parameters_are_counted_in_model_pt_when_config_lacks_them(make_run):
    import torch

    run = make_run("r")
    _set_config(run, n_params=None)
    torch.save({"w": torch.zeros(3, 4), "b": torch.zeros(4)}, run / "model.pt")
    assert count_parameters(run / "model.pt") == 16
    rows = evaluate_cost([run])
    assert rows[rows.metric == "n_params"].value.iloc[0] == 16


def test_eval_fair_writes_cost_rows_to_metrics_without_prepared_data(tmp_path, make_run):
    make_run("late-0", method="late")
    make_run("ehr-0", method="ehr")
    ws = Workspace.resolve(tmp_path)
    pipeline.eval_fair(EvalFairConfig(attributes=("gender",), bootstrap=0, permutations=0), ws)
    metrics = read_results(ws.metrics_csv)
    assert set(metrics.metric) == {"n_params", "train_seconds", "peak_memory_mb"}
    assert len(metrics) == 6  # one row per metric per run
    fairness = read_results(ws.fairness_csv)
    assert "auroc_difference" in set(fairness.metric)
