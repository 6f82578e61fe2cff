"""Hand-computed expectations for five bugs the fast suite once let through (issue 16, "Tests that catch real
bugs"), each planted and seen to fail these tests before being reverted:

* the patient bootstrap never drawing the last subject (``integers(0, n_subjects - 1)``);
* folds no longer stratified on mortality;
* the Youden rule breaking a tie the other way than documented (the highest threshold wins);
* M3Care using the EHR+CXR kernel for stays without a CXR;
* M3Care's stability loss including absent stays;

and the largest-remainder allocation of ``mcar`` removals pinned by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmfair.core.data.cohort import assign_folds
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.scenarios import stratified_removal
from mmfair.core.evaluation.thresholds import choose_threshold
from mmfair.core.fusion import FusionSpec
from mmfair.core.registry import FUSIONS
from mmfair.core.training.data import Split


# ---- patient bootstrap -------------------------------------------------------------------------------
def test_every_subject_is_drawn_with_probability_one_over_n():
    subjects = np.array([7, 7, 3, 9])  # codes (sorted ids): 3 -> 0, 7 -> 1, 9 -> 2 (the last)
    boot = PatientBootstrap(subjects, n_boot=3000, seed=0)
    assert boot.subject_draws.min() == 0 and boot.subject_draws.max() == 2
    share = np.bincount(boot.subject_draws.ravel(), minlength=3) / boot.subject_draws.size
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.02)
    # a stay's expected count is 1 (each of n draws picks its subject with probability 1/n) ...
    np.testing.assert_allclose(boot.weights.mean(axis=0), [1, 1, 1, 1], atol=0.06)
    # ... and stays of one subject always enter together
    np.testing.assert_array_equal(boot.weights[:, 0], boot.weights[:, 1])
    np.testing.assert_array_equal(boot.weights.sum(axis=1), boot.weights[:, [0, 2, 3]].sum(axis=1) + boot.weights[:, 1])


def test_two_subjects_sometimes_draw_only_the_last():
    boot = PatientBootstrap([1, 2], n_boot=400, seed=1)
    only_last = (boot.weights[:, 0] == 0) & (boot.weights[:, 1] == 2)
    assert 0.15 < only_last.mean() < 0.35  # probability 1/4


# ---- folds -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_folds_hold_the_same_number_of_deaths(seed):
    # 50 subjects with two stays each, 10 of them with two deaths: 100 stays, 20 deaths
    subjects = np.repeat(np.arange(50), 2)
    mortality = (subjects < 10).astype(int)
    cohort = pd.DataFrame({"subject_id": subjects, "mortality": mortality})
    folds = assign_folds(cohort, 5, seed)
    assert np.bincount(folds).tolist() == [20] * 5
    assert np.bincount(folds[mortality == 1], minlength=5).tolist() == [4] * 5
    assert (pd.Series(folds).groupby(subjects).nunique() == 1).all()  # patient-level


# ---- Youden tie --------------------------------------------------------------------------------------
def test_youden_tie_goes_to_the_highest_threshold():
    # thresholds 0.9 (TPR 1/2, FPR 0) and 0.5 (TPR 1, FPR 1/2) both give J = 1/2: the rule keeps 0.9
    y = np.array([1, 0, 1, 0])
    score = np.array([0.9, 0.7, 0.5, 0.2])
    assert choose_threshold(y, score, "val-youden") == pytest.approx(0.9)
    # the mirrored tie: 0.8 (TPR 1/3, FPR 0) and 0.4 (TPR 1, FPR 2/3) both give 1/3; 0.6 gives 1/3 too
    y = np.array([1, 0, 1, 0, 1])
    score = np.array([0.8, 0.7, 0.6, 0.5, 0.4])
    assert choose_threshold(y, score, "val-youden") == pytest.approx(0.8)


# ---- largest remainder -------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes, rate, expected", [
    # 7 + 3 stays, rate 0.45: total round(4.5) = 5; quotas 3.15 / 1.35 -> 3 + 1, the one owed to .35 > .15
    ((7, 3), 0.45, (3, 2)),
    # 9 + 2, rate 0.3: total round(3.3) = 3; quotas 2.7 / 0.6 -> 2 + 0, the one owed to .7 > .6
    ((9, 2), 0.3, (3, 0)),
    # 4 + 6, rate 0.25: total round(2.5) = 3 (half up); quotas 1.0 / 1.5 -> 1 + 1, the one owed to .5
    ((4, 6), 0.25, (1, 2)),
    # 3 + 1, rate 0.9: total round(3.6) = 4; quotas 2.7 / 0.9 -> 2 + 0, owed 2: one each
    ((3, 1), 0.9, (3, 1)),
])
def test_largest_remainder_quotas_by_hand(sizes, rate, expected):
    strata = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    present = np.ones(strata.size, dtype=bool)
    for seed in range(5):  # the quotas do not depend on the draw, only which stays fill them
        keep = stratified_removal(present, strata, rate, seed)
        removed = tuple(int((~keep[strata == k]).sum()) for k in range(len(sizes)))
        assert removed == expected


def test_largest_remainder_ties_go_either_way_with_the_draw():
    # 5 + 3 + 2 stays, rate 0.5: total 5; quotas 2.5 / 1.5 / 1.0 -> 2 + 1 + 1, the one owed to stratum 0 or 1
    strata = np.array([0] * 5 + [1] * 3 + [2] * 2)
    seen = set()
    for seed in range(20):
        keep = stratified_removal(np.ones(10, dtype=bool), strata, 0.5, seed)
        removed = tuple(int((~keep[strata == k]).sum()) for k in range(3))
        assert removed in {(3, 1, 1), (2, 2, 1)}
        seen.add(removed)
    assert seen == {(3, 1, 1), (2, 2, 1)}


# ---- M3Care ------------------------------------------------------------------------------------------
F, D, T, H = 3, 12, 8, 16


def m3care(**params) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = FUSIONS.get("m3care")
    spec = FusionSpec(n_features=F, cxr_dim=D, n_outputs=1, hidden_dim=H, dropout=0.0, seq_len=T)
    return cls(spec, cls.Params(**params))


def split(n: int, present_cxr: list[bool], seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    present = torch.tensor(present_cxr)
    cxr = torch.randn(n, D, generator=g) * present[:, None]
    return Split(name="x", rows=np.arange(n), inputs={"ehr": torch.randn(n, T, 2 * F, generator=g), "cxr": cxr},
                 present={"ehr": torch.ones(n, dtype=torch.bool), "cxr": present}, labels=torch.zeros(n, 1))


def constant_projection(layer: torch.nn.Sequential, bias: float) -> None:
    """φ(h) = ReLU(0·h + bias): the same projected vector for every stay."""
    with torch.no_grad():
        layer[0].weight.zero_()
        layer[0].bias.fill_(bias)


def test_m3care_compares_a_stay_without_cxr_on_the_ehr_kernel_only():
    """A one-stay bank and an EHR projection that maps every stay to the same point: the EHR kernel is 1 for
    every pair and the bank-bank graph is the bank stay itself, whatever the CXR projection. So a stay
    WITHOUT a CXR (similarity = its EHR kernel = 1 > ε = 0.75) always has the bank stay as its neighbour,
    and nothing on its path reads the CXR projection: its prediction cannot change when that projection is
    rescaled. (With the EHR+CXR kernel, its similarity would be (1 + k_cxr)/2, which falls below ε once
    the rescaled CXR projection puts it far from the bank stay.)"""
    model = m3care(bank_size=1, initial_threshold=0.75)
    model.prepare(split(4, [True, True, False, True], seed=1))
    graphs = model.fusion["graphs"]
    constant_projection(graphs["ehr"].projection, 0.5)
    queries = split(4, [False, True, False, True], seed=2).batch(torch.arange(4))
    logits = {}
    for scale in (0.01, 100.0):
        with torch.no_grad():
            graphs["cxr"].projection[0].weight.copy_(torch.eye(H) * scale)
            graphs["cxr"].projection[0].bias.zero_()
        logits[scale] = model.eval()(queries).logits
    without_cxr = torch.tensor([True, False, True, False])
    torch.testing.assert_close(logits[0.01][without_cxr], logits[100.0][without_cxr], rtol=0, atol=0)
    assert not torch.allclose(logits[0.01][~without_cxr], logits[100.0][~without_cxr])  # control: it matters there


def test_m3care_stability_loss_averages_over_observed_features_only():
    """λ · Σ_m mean over the stays that HAVE modality m of |‖φ_m(h)‖ − ‖h‖|, with φ constant so that
    ‖φ_m(h)‖ = bias · √H: computed by hand from the encoder features the model returns."""
    weight, bias = 0.3, 0.5
    model = m3care(bank_size=2, stability_weight=weight)
    graphs = model.fusion["graphs"]
    constant_projection(graphs["ehr"].projection, bias)
    constant_projection(graphs["cxr"].projection, bias)
    present = [True, False, False, True, False]
    out = model.train()(split(5, present, seed=3).batch(torch.arange(5)))  # eval pads small batches
    norm_phi = bias * H ** 0.5
    ehr_gap = (norm_phi - out.embeddings["ehr"].norm(dim=1)).abs().mean()
    cxr_gap = (norm_phi - out.embeddings["cxr"][torch.tensor(present)].norm(dim=1)).abs().mean()
    expected = weight * (ehr_gap + cxr_gap)
    torch.testing.assert_close(out.aux_losses["stability"], expected)
    assert (out.embeddings["cxr"][~torch.tensor(present)] == 0).all()  # an absent CXR's feature is zero ...
    assert norm_phi > 0  # ... so including it would add |norm_phi − 0| terms and shrink the mean's divisor
