"""Selection rules in the evaluation core: every ``predictions_test_<rule>.csv`` is scored and tagged
``selection=<rule>``, with thresholds chosen on that rule's own validation predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from mmfair.core.config import EvalFairConfig
from mmfair.core.evaluation import evaluate_clean, evaluate_fairness
from mmfair.core.evaluation.run_folder import selection_rules
from mmfair.core.evaluation.thresholds import choose_threshold


def _add_rule(run_dir, rule: str, shift: float, seed: int) -> None:
    """``predictions_{val,test}_<rule>.csv``: the default files with perturbed scores."""
    rng = np.random.default_rng(seed)
    for split in ("val", "test"):
        df = pd.read_csv(run_dir / f"predictions_{split}.csv")
        df["score"] = np.clip(df["score"] + shift + rng.normal(0, 0.1, len(df)), 0.001, 0.999).round(4)
        df.to_csv(run_dir / f"predictions_{split}_{rule}.csv", index=False)


def test_selection_rules_are_found_from_the_test_files(make_run):
    run = make_run("r")
    assert selection_rules(run) == []
    _add_rule(run, "worst_group", 0.1, 1)
    _add_rule(run, "dto", -0.1, 2)
    (run / "predictions_test_Bad-Name.csv").write_text("x\n")
    assert selection_rules(run) == ["dto", "worst_group"]


def test_clean_rows_are_tagged_with_their_selection(make_run):
    run = make_run("r")
    _add_rule(run, "worst_group", 0.1, 1)
    out = evaluate_clean([run], bootstrap=20)
    assert set(out["selection"]) == {"overall", "worst_group"}
    plain = evaluate_clean([make_run("plain")], bootstrap=20)
    assert set(plain["selection"]) == {"overall"}
    default = out[out["selection"] == "overall"].reset_index(drop=True)
    pd.testing.assert_frame_equal(default.drop(columns="run_id"), plain.drop(columns="run_id"))
    rule = out[out["selection"] == "worst_group"]
    test = pd.read_csv(run / "predictions_test_worst_group.csv")
    auroc = rule[(rule["metric"] == "auroc") & (rule["label"] == "all") & (rule["evaluated_on"] == "all")]
    assert len(auroc) == 1
    assert np.isclose(auroc["value"].iloc[0], roc_auc_score(test["label"], test["score"]))
    assert auroc["ci_low"].notna().all()
    # cost rows belong to the default selection only
    assert not rule["metric"].isin(["n_params", "train_seconds", "peak_memory_mb"]).any()


def test_fairness_rows_use_the_rules_own_validation_threshold(make_run):
    run = make_run("r")  # threshold.json holds 0.45 for the default checkpoint
    _add_rule(run, "pareto", 0.15, 3)
    cfg = EvalFairConfig(attributes=("race_group",), bootstrap=0)
    out = evaluate_fairness([run], cfg)
    assert set(out["selection"]) == {"overall", "pareto"}
    val = pd.read_csv(run / "predictions_val_pareto.csv")
    test = pd.read_csv(run / "predictions_test_pareto.csv")
    t = choose_threshold(val["label"].to_numpy(), val["score"].to_numpy(), "val-youden")
    assert not np.isclose(t, 0.45)
    for selection, frame, thr in (("pareto", test, t), ("overall", pd.read_csv(run / "predictions_test.csv"), 0.45)):
        rows = out[(out["selection"] == selection) & (out["metric"] == "selection_rate")]
        for _, row in rows.iterrows():
            members = frame["race_group"] == row["group"]
            assert np.isclose(row["value"], (frame.loc[members, "score"] >= thr).mean())


def test_rule_thresholds_never_look_at_test(make_run):
    run = make_run("r")
    _add_rule(run, "dto", 0.0, 4)
    cfg = EvalFairConfig(attributes=("gender",), bootstrap=0)
    before = evaluate_fairness([run], cfg)
    # flip the rule's test labels: per-group metrics change, the threshold (from validation) must not
    test = pd.read_csv(run / "predictions_test_dto.csv")
    test["label"] = 1 - test["label"]
    test.to_csv(run / "predictions_test_dto.csv", index=False)
    after = evaluate_fairness([run], cfg)
    sel = ["selection", "attribute", "group", "metric"]
    for frame in (before, after):
        frame.sort_values(sel, inplace=True)
    rate_b = before[(before["selection"] == "dto") & (before["metric"] == "selection_rate")]["value"].to_numpy()
    rate_a = after[(after["selection"] == "dto") & (after["metric"] == "selection_rate")]["value"].to_numpy()
    np.testing.assert_allclose(rate_a, rate_b)  # same threshold, same scores -> same selection rates


def test_recalibrated_rule_is_fitted_on_its_own_validation(make_run):
    run = make_run("r")
    _add_rule(run, "worst_group", 0.2, 5)
    out = evaluate_fairness([run], EvalFairConfig(attributes=("gender",), bootstrap=0, recalibrate="platt"))
    assert set(out["selection"]) == {"overall", "worst_group"}
    assert set(out["threshold_rule"]) == {"val-youden+platt"}


def test_a_three_stay_validation_group_drives_no_selection_rule():
    # issue 11: groups A and B (30 stays, 15 positives each) and C (3 stays). Epoch 1 ranks A and B well and C
    # backwards; epoch 2 ranks C perfectly and A, B worse. With C, worst_group/dto would pick epoch 2
    # because of three stays; C is below the small-cell minimum, so it writes no column and epoch 1 wins.
    from mmfair.core.training.selection import choose_epochs, large_enough
    from mmfair.core.training.tasks import get_task
    from mmfair.core.training.trainer import group_aurocs

    task = get_task("mortality")
    y = np.array([0, 1] * 30 + [0, 0, 1])
    groups = {"race_group": np.array(["A"] * 30 + ["B"] * 30 + ["C"] * 3, dtype=object)}
    noise = np.random.default_rng(0).random(63)
    good = np.where(y == 1, 0.6, 0.4) + 0.3 * noise  # AUROC well above 0.5 on A and B
    epoch1 = np.concatenate([good[:60], [0.9, 0.8, 0.1]])  # C backwards: AUROC 0
    epoch2 = np.concatenate([0.5 + 0.5 * noise[:60], [0.1, 0.2, 0.9]])  # A, B near chance; C perfect
    rows = []
    for epoch, probs in ((1, epoch1), (2, epoch2)):
        cols = group_aurocs(task, y, probs, groups)
        assert set(cols) == {"val_auroc[race_group=A]", "val_auroc[race_group=B]"}  # no C column
        rows.append({"epoch": epoch, **cols})
    history = pd.DataFrame(rows)
    assert choose_epochs(history, ("worst_group", "dto", "pareto"), "race_group", 1) == {
        "worst_group": 1, "dto": 1, "pareto": 1}
    assert not large_enough(np.array([0, 0, 1])) and not large_enough(np.array([0] * 15 + [1] * 9))
    assert large_enough(np.array([0, 1] * 10))
