"""Statistics across methods: permutation tests (power and size), multiplicity, rank tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from mmfair.core.evaluation import stats as S


def _two_methods(rng, n_subjects=120, effect=0.0, bias_group=None, bias=0.0):
    subj = np.repeat(np.arange(n_subjects), rng.choice([1, 2], n_subjects, p=[0.6, 0.4]))
    n = subj.size
    y = (rng.random(n) < 0.35).astype(int)
    g = rng.choice(["A", "B"], n)
    latent = rng.normal(0, 1, n)
    a = 1.0 * y + latent + rng.normal(0, 1, n)
    b = (1.0 + effect) * y + latent + rng.normal(0, 1, n)
    if bias_group is not None:
        m = (g == bias_group) & (y == 1)
        b[m] -= bias
    return y, 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b)), g, subj


def test_auroc_rows_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = (rng.random(50) < 0.4).astype(int)
    x = np.round(rng.random((4, 50)), 1)
    assert S.auroc_rows(y, x) == pytest.approx([roc_auc_score(y, r) for r in x])
    assert np.isnan(S.auroc_rows(np.zeros(5), np.ones((2, 5)))).all()


def test_permutation_finds_a_real_auroc_difference():
    y, a, b, _, subj = _two_methods(np.random.default_rng(1), n_subjects=300, effect=1.0)
    res = S.paired_permutation_test(y, b, a, subj, n_perm=499, seed=0)
    assert res.observed == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))
    assert res.observed > 0 and res.p_value < 0.01


def test_permutation_swaps_whole_patients():
    """With one subject holding every stay there are only two arrangements: T or −T."""
    y, a, b, _, _ = _two_methods(np.random.default_rng(2), n_subjects=30, effect=1.0)
    res = S.paired_permutation_test(y, a, b, np.zeros(y.size), n_perm=50, seed=0)
    assert res.p_value == 1.0


def test_permutation_size_under_the_null_within_binomial_interval():
    """200 null replicates at level 0.05: the rejection count lies in the binomial 99 % interval."""
    level, reps = 0.05, 200
    rejections = 0
    for r in range(reps):
        rng = np.random.default_rng(1000 + r)
        y, a, b, _, subj = _two_methods(rng, n_subjects=40, effect=0.0)
        rejections += S.paired_permutation_test(y, a, b, subj, n_perm=99, seed=r).p_value <= level
    lo, hi = sps.binom.ppf([0.005, 0.995], reps, level)
    assert lo <= rejections <= hi, rejections


def test_permutation_of_a_fairness_gap_difference():
    y, a, b, g, subj = _two_methods(np.random.default_rng(3), n_subjects=400, bias_group="B", bias=1.5)
    stat = S.group_gap_statistic(g, "auroc")
    res = S.paired_permutation_test(y, b, a, subj, statistic=stat, n_perm=299, seed=1)
    gap = lambda s: abs(roc_auc_score(y[g == "A"], s[g == "A"]) - roc_auc_score(y[g == "B"], s[g == "B"]))
    assert res.value_a == pytest.approx(gap(b)) and res.value_b == pytest.approx(gap(a))
    assert res.observed > 0 and res.p_value < 0.01
    # on hard predictions: the TPR gap (each method at its own threshold)
    ha, hb = (a >= 0.5).astype(float), (b >= 0.5).astype(float)
    res_t = S.paired_permutation_test(y, hb, ha, subj, statistic=S.group_gap_statistic(g, "tpr"), n_perm=299)
    assert res_t.observed > 0 and res_t.p_value < 0.05


def test_group_gap_statistic_skips_undefined_groups():
    y = np.array([0, 1, 0, 1, 0, 0])
    g = np.array(["A", "A", "B", "B", "C", "C"])  # C has no positive
    stat = S.group_gap_statistic(g, "auroc")
    x = np.array([[0.1, 0.9, 0.8, 0.2, 0.5, 0.6]])
    assert stat(y, x)[0] == pytest.approx(1.0)
    assert np.isnan(S.group_gap_statistic(np.array(["A"] * 6), "auroc")(y, x)[0])


def test_planted_group_disparity_ci_excludes_zero():
    y, _, b, g, subj = _two_methods(np.random.default_rng(4), n_subjects=500, bias_group="B", bias=1.5)
    d = S.group_difference_ci(y, b, g, "A", "B", subj, metric="auroc", n_boot=300)
    assert d.value > 0 and d.ci.low > 0


def test_no_disparity_ci_covers_zero_in_at_least_90_of_100_seeds():
    covered = 0
    for seed in range(100):
        y, a, _, g, subj = _two_methods(np.random.default_rng(500 + seed), n_subjects=80)
        d = S.group_difference_ci(y, a, g, "A", "B", subj, metric="auroc", n_boot=200, seed=seed)
        covered += d.ci.low <= 0 <= d.ci.high
    assert covered >= 90, covered


def test_holm_and_bh_against_hand_and_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 → 0.02, 0.03, 0.06, 0.04→0.06 (monotone)
    assert S.holm(p)[[3, 0, 2, 1]] == pytest.approx([0.02, 0.03, 0.06, 0.06])
    assert np.isnan(S.holm(p)[4]) and np.isnan(S.benjamini_hochberg(p)[4])
    assert S.benjamini_hochberg(p[:4]) == pytest.approx(sps.false_discovery_control(p[:4], method="bh"))
    rng = np.random.default_rng(0)
    q = rng.random(30) ** 3
    assert S.benjamini_hochberg(q) == pytest.approx(sps.false_discovery_control(q, method="bh"))
    assert (S.holm(q) >= S.benjamini_hochberg(q) - 1e-12).all()


def _blocks(seed=0, n_blocks=12):
    rng = np.random.default_rng(seed)
    base = rng.normal(0.75, 0.05, n_blocks)
    return pd.DataFrame({"late": base, "early": base + 0.02 + rng.normal(0, 0.005, n_blocks),
                         "ehr": base - 0.05 + rng.normal(0, 0.005, n_blocks),
                         "joint": base + rng.normal(0, 0.02, n_blocks)})  # fmt: skip


def test_rank_statistics_against_scipy():
    t = _blocks()
    ranks = S.mean_ranks(t, higher_is_better=True)
    assert ranks.index[0] == "early" and ranks.index[-1] == "ehr"
    assert ranks.sum() == pytest.approx(10.0)  # 1+2+3+4
    stat, p = S.friedman(t)
    ref = sps.friedmanchisquare(*[t[c] for c in t.columns])
    assert (stat, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert S.nemenyi_cd(4, 10) == pytest.approx(2.569 * np.sqrt(20 / 60), abs=1e-3)  # Demšar's table q = 2.569
    w = S.wilcoxon_holm(t, "late").set_index("method")
    assert w.loc["early", "p_value"] == pytest.approx(sps.wilcoxon(t.early, t.late).pvalue)
    assert w.loc["early", "median_difference"] > 0 and w.loc["ehr", "median_difference"] < 0
    assert (w["p_holm"] >= w["p_value"]).all()
    many = S.compare_many(t, higher_is_better=True, reference="late")
    assert many.friedman_p < 0.01 and many.n_blocks == 12
    lower = S.mean_ranks(t, higher_is_better=False)
    assert lower.index[0] == "ehr"


def test_rank_statistics_input_checks():
    t = _blocks()
    with pytest.raises(ValueError):
        S.friedman(t[["late", "early"]])
    with pytest.raises(KeyError, match="reference"):
        S.wilcoxon_holm(t, "nope")
    same = pd.DataFrame({"a": [0.1, 0.2, 0.3], "b": [0.1, 0.2, 0.3]})
    assert S.wilcoxon_holm(same, "a").p_value.iloc[0] == 1.0


def test_blocks_from_tidy():
    from mmfair.core.evaluation.tidy import make_row, to_frame

    rows = [make_row(method=m, task="mortality", label="all", attribute="gender", metric="auroc_gap", value=v,
                     run_id=f"{m}{s}", seed=s)
            for m, vals in (("late", (0.1, 0.2)), ("early", (0.3, 0.3))) for s, v in enumerate(vals)]  # fmt: skip
    t = S.blocks_from_tidy(to_frame(rows), "auroc_gap")
    assert t.loc[("mortality", "all", "gender"), "late"] == pytest.approx(0.15)


def test_adjust_p_dispatch_and_phenotype_family():
    rng = np.random.default_rng(7)
    pvals = []
    for k in range(5):  # five labels, fusion truly better on the first two only
        y, a, b, _, subj = _two_methods(rng, n_subjects=200, effect=1.5 if k < 2 else 0.0)
        pvals.append(S.paired_permutation_test(y, b, a, subj, n_perm=199, seed=k).p_value)
    assert S.adjust_p(pvals, "holm") == pytest.approx(S.holm(pvals))
    assert S.adjust_p(pvals, "bh") == pytest.approx(S.benjamini_hochberg(pvals))
    assert (S.adjust_p(pvals, "bh")[:2] < 0.05).all()
    with pytest.raises(ValueError):
        S.adjust_p(pvals, "bonferroni-ish")


def test_auroc_permutation_test_is_invariant_to_rescaling_either_method():
    from mmfair.core.evaluation.stats import paired_permutation_test

    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 60)
    a = y + rng.normal(0, 1.0, y.size)
    b = y + rng.normal(0, 1.6, y.size)
    plain = paired_permutation_test(y, a, b, np.arange(y.size), n_perm=400, seed=1)
    rescaled = paired_permutation_test(y, 1 / (1 + np.exp(-a)), 50 + 0.01 * b, np.arange(y.size), n_perm=400, seed=1)
    assert rescaled.observed == pytest.approx(plain.observed)
    assert rescaled.p_value == pytest.approx(plain.p_value)  # raw-score swapping fails this: scales differ
