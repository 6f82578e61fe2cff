"""Paired comparisons of every method with the reference on the same test stays, as tidy rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mmfair.core.config import EvalFairConfig
from mmfair.core.evaluation.reference_comparisons import evaluate_comparisons
from mmfair.core.evaluation.stats import holm


def _rescore(run, fn) -> None:
    """Replace the scores of a run's test predictions by ``fn(frame)`` (a dict column -> values)."""
    path = run / "predictions_test.csv"
    pred = pd.read_csv(path)
    for col, values in fn(pred).items():
        pred[col] = values
    pred.to_csv(path, index=False)


def _one(rows, **eq) -> pd.Series:
    sel = rows
    for k, v in eq.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (eq, len(sel))
    return sel.iloc[0]


def test_identical_method_differs_by_nothing(make_run):
    late, same = make_run("late-0", method="late"), make_run("copy-0", method="copy")
    rows = evaluate_comparisons([late, same], EvalFairConfig(attributes=("gender",), bootstrap=50, permutations=99))
    d = _one(rows, metric="auroc_difference", attribute="all")
    assert d.value == 0 and d.ci_low == 0 and d.ci_high == 0
    assert _one(rows, metric="auroc_difference_p", attribute="all").value == 1.0
    assert json.loads(d.scenario_params)["reference_run"] == "late-0"
    assert set(rows.run_id) == {"copy-0"}  # the reference is not compared with itself


def test_better_without_cxr_is_found_where_it_is_planted(make_run):
    late, aware = make_run("late-0", method="late"), make_run("aware-0", method="aware")

    def sharper_without_cxr(pred):
        y, s, no_cxr = pred["label"].to_numpy(), pred["score"].to_numpy(), pred["present_cxr"].to_numpy() == 0
        return {"score": np.where(no_cxr, np.clip(s + 0.25 * (y - 0.5), 0, 1), s)}

    _rescore(aware, sharper_without_cxr)
    rows = evaluate_comparisons([late, aware], EvalFairConfig(attributes=("gender",), bootstrap=200, permutations=199))
    a, b = pd.read_csv(aware / "predictions_test.csv"), pd.read_csv(late / "predictions_test.csv")
    m = a["present_cxr"].to_numpy() == 0
    expected = roc_auc_score(a.label[m], a.score[m]) - roc_auc_score(b.label[m], b.score[m])
    no_cxr = _one(rows, metric="auroc_difference", attribute="has_cxr", group="0")
    assert no_cxr.value == pytest.approx(expected) and no_cxr.n == m.sum()
    assert no_cxr.ci_low > 0
    assert _one(rows, metric="auroc_difference_p", attribute="has_cxr", group="0").value < 0.05
    overall = _one(rows, metric="auroc_difference", attribute="all")
    assert overall.value == pytest.approx(roc_auc_score(a.label, a.score) - roc_auc_score(b.label, b.score))


def test_phenotype_p_values_are_adjusted_across_labels(make_run):
    late = make_run("late-0", method="late", kind="multilabel")
    other = make_run("other-0", method="other", kind="multilabel", data_seed=0)
    _rescore(other, lambda p: {c: np.clip(p[c] + 0.1 * (p[c.replace("score", "label")] - 0.5), 0, 1)
                               for c in p.columns if c.startswith("score_")})  # fmt: skip
    for adjust, fn in (("holm", holm),):
        rows = evaluate_comparisons([late, other], EvalFairConfig(attributes=("gender",), bootstrap=20,
                                                                  permutations=99, adjust=adjust))  # fmt: skip
        raw = rows[(rows.metric == "auroc_difference_p") & (rows.attribute == "all")].sort_values("label")
        adj = rows[(rows.metric == "auroc_difference_p_adjusted") & (rows.attribute == "all")].sort_values("label")
        assert list(raw.label) == ["chf", "copd", "sepsis"] and list(adj.label) == list(raw.label)
        np.testing.assert_allclose(adj.value.to_numpy(), fn(raw.value.to_numpy()))
        assert (adj.value.to_numpy() >= raw.value.to_numpy()).all()


def test_gap_difference_uses_only_groups_the_report_shows(make_run):
    late, other = make_run("late-0", method="late", n_subjects=300), make_run("other-0", method="other", n_subjects=300)
    _rescore(other, lambda p: {"score": np.where(p["race_group"] == "BLACK", 0.5 + 0.5 * (p["score"] - 0.5), p["score"])})
    pred_a, pred_b = pd.read_csv(other / "predictions_test.csv"), pd.read_csv(late / "predictions_test.csv")
    counts = pred_a.groupby("race_group")["label"].agg(["size", "sum"])
    k = int(min(counts["sum"].min(), (counts["size"] - counts["sum"]).min())) + 1  # the smallest cell fails
    small = counts.index[np.minimum(counts["sum"], counts["size"] - counts["sum"]) < k]
    assert 1 <= len(small) < len(counts) - 1
    rows = evaluate_comparisons([late, other], EvalFairConfig(attributes=("race_group",), bootstrap=50,
                                                              permutations=0, min_group_size=k))  # fmt: skip
    kept = [g for g in counts.index if g not in small]

    def gap(pred):
        aucs = [roc_auc_score(pred.label[pred.race_group == g], pred.score[pred.race_group == g]) for g in kept]
        return max(aucs) - min(aucs)

    r = _one(rows, metric="auroc_gap_difference", attribute="race_group")
    assert r.value == pytest.approx(gap(pred_a) - gap(pred_b))
    assert r.n == pred_a.race_group.isin(kept).sum()
    assert np.isfinite(r.ci_low) and r.ci_low <= r.ci_high
    assert not _one(rows, metric="auroc_gap_difference_p", attribute="race_group").defined  # permutations=0


def test_no_reference_run_means_no_rows_and_disagreeing_labels_are_refused(make_run, caplog):
    other = make_run("other-0", method="other")
    assert len(evaluate_comparisons([other], EvalFairConfig(bootstrap=0))) == 0
    late = make_run("late-0", method="late", data_seed=5)  # another draw: the labels of the same stay ids differ
    good = make_run("good-0", method="good", data_seed=5)
    # the pair is refused with its reason; the other run is still compared (issue 16)
    rows = evaluate_comparisons([late, other, good], EvalFairConfig(bootstrap=0, permutations=0))
    assert set(rows.run_id) == {"good-0"}
    assert "other-0: not compared with late-0" in caplog.text and "different 'label' labels" in caplog.text


def test_reference_run_matches_task_fold_and_seed(make_run):
    runs = [make_run("late-s0", method="late", seed=0), make_run("late-s1", method="late", seed=1),
            make_run("late-f1", method="late", fold=1), make_run("x-s1", method="x", seed=1)]  # fmt: skip
    rows = evaluate_comparisons(runs, EvalFairConfig(attributes=("gender",), bootstrap=0, permutations=0))
    refs = {json.loads(p)["reference_run"] for p in rows.scenario_params}
    assert refs == {"late-s1"}


def test_a_cxr_only_method_is_compared_on_the_stays_with_a_cxr(make_run):
    # issue 11: daft scores only the stays with a CXR; the pair is compared on those stays, n says how many,
    # and there is no "stays without a CXR" comparison for it (no shared stay there)
    late, daft = make_run("late-0", method="late"), make_run("daft-0", method="daft")
    _rescore(daft, lambda p: {"score": np.where(p.present_cxr > 0, 1 - p.score, np.nan)})
    pred = pd.read_csv(daft / "predictions_test.csv")
    ref = pd.read_csv(late / "predictions_test.csv")
    cxr = pred.present_cxr.to_numpy() > 0
    rows = evaluate_comparisons([late, daft], EvalFairConfig(attributes=("gender",), bootstrap=20, permutations=0))
    d = _one(rows, metric="auroc_difference", attribute="all")
    assert d.evaluated_on == "with_cxr" and d.n == cxr.sum()
    expected = roc_auc_score(pred.label[cxr], pred.score[cxr]) - roc_auc_score(ref.label[cxr], ref.score[cxr])
    assert d.value == pytest.approx(expected)
    assert not (rows.attribute == "has_cxr").any()
    assert (rows.evaluated_on == "with_cxr").all()
    # two methods that score every stay: evaluated on all of them
    both = evaluate_comparisons([late, make_run("early-0", method="early")], EvalFairConfig(bootstrap=0, permutations=0))
    assert (both.evaluated_on == "all").all() and _one(both, metric="auroc_difference", attribute="all").n == len(ref)
