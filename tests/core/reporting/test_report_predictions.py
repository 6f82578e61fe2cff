"""What the report computes from the runs' stored predictions: per-group reliability curves, fusion vs the
single modality chosen on validation, paired intervals of the modality-addition steps (conftest.py's runs)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mmfair.core import pipeline
from mmfair.core.config import ReportConfig
from mmfair.core.evaluation.run_folder import RunInfo
from mmfair.core.reporting.inputs import load_inputs
from mmfair.core.reporting.predictions import Run, reliability_curves


def _info(run_id: str) -> RunInfo:
    return RunInfo(run_dir=Path(run_id), run_id=run_id, method="m", modalities="ehr", task="mortality", fold=0,
                   seed=0, train_cohort="full", test_cohort="full", train_missing_rate=None, selection="overall")


def _hand_stays() -> pd.DataFrame:
    """A: 6 stays at 0.15 (2 positive), 6 at 0.85 (5 positive), 3 at 0.55 (1 positive); C: 12 at 0.45 (6
    positive); B: 4 stays (2 positive)."""
    rows = [("A", 0.15, int(i < 2)) for i in range(6)] + [("A", 0.85, int(i < 5)) for i in range(6)]
    rows += [("A", 0.55, int(i < 1)) for i in range(3)] + [("C", 0.45, int(i < 6)) for i in range(12)]
    rows += [("B", 0.95, int(i < 2)) for i in range(4)]
    df = pd.DataFrame(rows, columns=["race_group", "score", "label"])
    return df.assign(stay_id=np.arange(len(df)), subject_id=np.arange(len(df)))


def test_reliability_bins_and_small_cells_by_hand():
    stays = _hand_stays()
    # two seeds of one method on the same stays: B still counts 4 stays (not 8 rows) and stays hidden
    runs = [Run(_info("s0"), "m", stays), Run(_info("s1"), "m", stays)]
    curves = reliability_curves(runs, ["race_group"], min_group_size=5)
    # B (4 stays) is small; C (12) is its complement, the next-smallest; A (15: 8 positive, 7 negative) is shown
    assert set(curves["group"]) == {"A"}
    # bins (0.1, 0.2] and (0.8, 0.9]: 6 stays each; the 3 stays at 0.55 are under 5 and not drawn
    assert curves["bin"].tolist() == [1, 8]
    assert np.allclose(curves["mean_score"], [0.15, 0.85]) and np.allclose(curves["observed"], [2 / 6, 5 / 6])
    # D: 12 stays in one bin but 1 positive (< 5): hidden by the count rule; with two groups hidden, C is shown
    d = pd.DataFrame({"race_group": "D", "score": 0.25, "label": [1] + [0] * 11, "stay_id": np.arange(100, 112)})
    with_d = pd.concat([stays, d.assign(subject_id=d["stay_id"])], ignore_index=True)
    curves = reliability_curves([Run(_info("s0"), "m", with_d)], ["race_group"], min_group_size=5)
    assert set(curves["group"]) == {"A", "C"}


def test_best_single_modality_is_chosen_on_validation_never_on_test(results_ws):
    best = load_inputs(results_ws).best_single.set_index("fusion")
    # EHR is better on validation, CXR on test (conftest SIGNAL): the comparator is EHR
    assert best["comparator"].tolist() == ["ehr", "ehr"]
    # both single models on the validation stays both scored (those with a CXR)
    ehr_val = pd.read_csv(results_ws.runs / "ehr-mortality" / "predictions_val.csv")
    cxr_val = pd.read_csv(results_ws.runs / "cxr-mortality" / "predictions_val.csv").dropna(subset=["score"])
    common = ehr_val[ehr_val["stay_id"].isin(cxr_val["stay_id"])]
    ehr_auc, cxr_auc = roc_auc_score(common["label"], common["score"]), roc_auc_score(cxr_val["label"], cxr_val["score"])
    assert best.loc["late", "why"] == f"ehr {ehr_auc:.3f} vs cxr {cxr_auc:.3f} ({len(common)} val stays)"
    for name in ("ehr", "cxr", "late", "early"):  # shuffle every run's test labels: the choice must not move
        path = results_ws.runs / f"{name}-mortality" / "predictions_test.csv"
        pred = pd.read_csv(path)
        pred["label"] = np.random.default_rng(7).permutation(pred["label"].to_numpy())
        pred.to_csv(path, index=False)
    assert load_inputs(results_ws).best_single["comparator"].tolist() == ["ehr", "ehr"]


def test_fusion_minus_comparator_is_paired_on_the_same_stays(results_ws):
    best = load_inputs(results_ws).best_single.set_index("fusion").loc["late"]
    late = pd.read_csv(results_ws.runs / "late-mortality" / "predictions_test.csv")
    ehr = pd.read_csv(results_ws.runs / "ehr-mortality" / "predictions_test.csv")
    expected = roc_auc_score(late["label"], late["score"]) - roc_auc_score(ehr["label"], ehr["score"])
    assert best["n"] == 485 and best["auroc"] == pytest.approx(expected)
    assert best["auroc_lo"] < best["auroc"] < best["auroc_hi"]


def _eo(pred: pd.DataFrame, groups: list[str], threshold: float = 0.3) -> float:
    hard = pred["score"] >= threshold
    tpr = [hard[(pred["race_group"] == g) & (pred["label"] == 1)].mean() for g in groups]
    fpr = [hard[(pred["race_group"] == g) & (pred["label"] == 0)].mean() for g in groups]
    return max(max(tpr) - min(tpr), max(fpr) - min(fpr))


def test_addition_steps_carry_paired_intervals(results_ws):
    steps = load_inputs(results_ws).addition
    step = steps[(steps["method"] == "late") & (steps["from"] == "ehr")].set_index("quantity")
    ehr = pd.read_csv(results_ws.runs / "ehr-mortality" / "predictions_test.csv")
    late = pd.read_csv(results_ws.runs / "late-mortality" / "predictions_test.csv")
    au = roc_auc_score(late["label"], late["score"]) - roc_auc_score(ehr["label"], ehr["score"])
    assert step.loc["AUROC", "change"] == pytest.approx(au) and step.loc["AUROC", "n"] == 485
    # EO over the groups with ≥ 10 stays, positives and negatives (TINYGRP left out), at the 0.3 threshold
    big = ["WHITE", "BLACK", "ASIAN"]
    assert step.loc["EO diff", "before"] == pytest.approx(_eo(ehr, big))
    assert step.loc["EO diff", "change"] == pytest.approx(_eo(late, big) - _eo(ehr, big))
    for q in ("AUROC", "AUPRC", "AUROC gap", "EO diff", "DP diff"):
        assert step.loc[q, "lo"] <= step.loc[q, "change"] <= step.loc[q, "hi"], q
    # from CXR alone: only the test stays with a CXR are shared
    from_cxr = steps[(steps["method"] == "late") & (steps["from"] == "cxr") & (steps["quantity"] == "AUROC")]
    assert from_cxr["n"].tolist() == [int(ehr["present_cxr"].sum())]


def test_html_is_a_pure_function_of_the_workspace(results_ws):
    first = pipeline.report(ReportConfig(format="html", figures=False), results_ws)[2]
    second = pipeline.report(ReportConfig(format="html", figures=False), results_ws)[2]
    assert first == second
    assert "Fusion vs the best single modality chosen on validation" in first and "change [95% CI]" in first


def test_without_run_folders_the_steps_keep_the_tidy_point_values(results_ws):
    import shutil

    shutil.rmtree(results_ws.runs)
    inputs = load_inputs(results_ws)
    assert len(inputs.reliability) == 0 and len(inputs.best_single) == 0
    steps = inputs.addition
    au = steps[steps["quantity"] == "AUROC"].set_index(["method", "from"])
    # late: ehr 0.74 → 0.78 in metrics.csv; no predictions, so no interval and no n
    assert au.loc[("late", "ehr"), "change"] == pytest.approx(0.04)
    assert steps["lo"].isna().all() and steps["n"].isna().all()
