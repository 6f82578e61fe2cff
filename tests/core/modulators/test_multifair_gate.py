"""MultiFair's fairness gate reads signal, not batch noise (issue 12; reference/multifair.md §4.2-4.3).

A simulated score stream with the synthetic source's group shares (``_vocab.RACE_SHARES`` mapped to
race_group, 44.3 % women), batch 128, prevalence 0.12 and a fixed per-group true AUC (binormal scores,
fresh each step as a training model's would be) is fed through the modulator's own group buffer and gate.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

import mmfair.core.training  # noqa: F401
from mmfair.core.config import TrainConfig
from mmfair.core.synthetic._vocab import RACE_SHARES, race_group
from mmfair.core.fusion import FusionSpec
from mmfair.core.registry import FUSIONS, TASKS
from mmfair.core.training import train_run
from mmfair.core.training.data import Split
from mmfair.core.modulators import Groups, build_modulator
from mmfair.core.modulators.multifair import auc_with_se, gate_decision, stratified_order
from mmfair.core.training.trainer import cpu_threads

TASK = TASKS.get("mortality")
BATCH, PREVALENCE = 128, 0.12
DEMO_TRAIN = 1200  # `make demo`: 2000 cohort stays, three of five folds train
MIMIC_TRAIN = 20000


def demo_shares(attribute: str) -> dict[str, float]:
    if attribute == "gender":
        return {"F": 0.443, "M": 0.557}
    shares: Counter = Counter()
    for race, share in RACE_SHARES.items():
        shares[race_group(race)] += share
    total = sum(shares.values())
    return {g: s / total for g, s in sorted(shares.items())}


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


def toy_modulator(params: dict, codes: np.ndarray, names: tuple[str, ...]):
    torch.manual_seed(0)
    spec = FusionSpec(n_features=2, cxr_dim=4, n_outputs=1, hidden_dim=8, ehr_encoder="lstm", dropout=0.0, seq_len=4)
    model = FUSIONS.get("early")(spec)
    n = len(codes)
    split = Split("train", np.arange(n), {"ehr": torch.zeros(n, 4, 4), "cxr": torch.zeros(n, 4)},
                  {"ehr": torch.ones(n, dtype=torch.bool), "cxr": torch.ones(n, dtype=torch.bool)},
                  torch.zeros(n, 1))
    mod = build_modulator("multifair", params)
    groups = Groups("race_group", names, torch.as_tensor(codes))
    mod.setup(model, TASK, split, TrainConfig(fusion="early", device="cpu"), groups, torch.device("cpu"))
    return mod


def simulate(attribute: str, n_train: int, aucs: dict[str, float] | None = None, steps: int = 300,
             params: dict | None = None, seed: int = 0):
    """Share of steps with the gate open, and per group the share of steps on which it counted."""
    rng = np.random.default_rng(seed)
    shares = demo_shares(attribute)
    names = tuple(shares)
    codes = rng.choice(len(names), size=n_train, p=list(shares.values()))
    y = (rng.random(n_train) < PREVALENCE).astype(np.float32)
    mod = toy_modulator(params or {}, codes, names)
    shift = np.sqrt(2) * norm.ppf([(aucs or {}).get(g, 0.8) for g in names])  # binormal: AUC = Φ(d/√2)
    opened, counted, order = 0, np.zeros(len(names)), np.array([], dtype=int)
    for _ in range(steps):
        if len(order) < BATCH:
            order = np.concatenate([order, rng.permutation(n_train)])
        index, order = order[:BATCH], order[BATCH:]
        g, label = torch.as_tensor(codes[index]), torch.as_tensor(y[index])[:, None]
        fused = label * torch.as_tensor(shift[codes[index]], dtype=torch.float32)[:, None] + torch.randn(BATCH, 1)
        scorable = torch.ones(BATCH, dtype=torch.bool)
        if mod.buffer is not None:
            mod.buffer.add(g, {"fused": fused, "Y": label, "scorable": scorable})
            gate = mod._buffered_gate()
        else:
            gate = mod._gate(fused, label, scorable, g)
        opened += gate
        counted[mod.gate_groups] += 1
    return opened / steps, dict(zip(names, counted / steps)), shares


@pytest.mark.parametrize("attribute", ["race_group", "gender"])
@pytest.mark.parametrize("n_train", [DEMO_TRAIN, MIMIC_TRAIN])
def test_equal_group_aucs_rarely_open_the_gate_and_every_large_group_counts(attribute, n_train):
    share_open, counted, shares = simulate(attribute, n_train)
    assert share_open < 0.10
    for group, share in shares.items():  # a group of >= 5 % of training must not be silently dropped
        if share >= 0.05:
            assert counted[group] > 0.5, (group, counted)


@pytest.mark.parametrize("attribute,worse", [("race_group", "BLACK"), ("race_group", "UNKNOWN"), ("gender", "F")])
def test_a_planted_gap_of_0_1_opens_the_gate_on_most_steps(attribute, worse):
    share_open, _, _ = simulate(attribute, MIMIC_TRAIN, aucs={worse: 0.7})
    assert share_open > 0.5


def test_the_release_batch_gate_opens_on_noise():
    """The official-code gate (per batch, any group with 2 rows) under equal true AUCs: mostly open."""
    share_open, _, _ = simulate("race_group", MIMIC_TRAIN, params={"variant": "official-code"}, steps=100)
    assert share_open > 0.5


def test_auc_standard_error_and_minimum_counts():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(50), np.zeros(450)]
    s = y * 1.19 + rng.normal(size=500)
    auc, se = auc_with_se(y, s, 10, 10)
    # Hanley & McNeil by hand for A = auc, 50 positives, 450 negatives
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    expected = np.sqrt((auc * (1 - auc) + 49 * (q1 - auc**2) + 449 * (q2 - auc**2)) / (50 * 450))
    assert se == pytest.approx(expected) and 0.02 < se < 0.05
    assert auc_with_se(y[40:], s[40:], 11, 10) is None  # 10 positives left, 11 needed
    assert auc_with_se(np.zeros(5), np.arange(5.0), 1, 1) is None
    # the gate: a gap above τ but within noise stays closed; a large significant one opens
    assert not gate_decision({0: (0.80, 0.03), 1: (0.75, 0.03)}, 0.04, 0.05)
    assert gate_decision({0: (0.80, 0.01), 1: (0.70, 0.01)}, 0.04, 0.05)
    assert gate_decision({0: (0.80, 0.03), 1: (0.75, 0.03)}, 0.04, None)  # the release's rule: gap > τ
    assert not gate_decision({0: (0.9, 0.0)}, 0.04, None)  # one group: closed


def test_stratified_batches_hold_every_label_by_group_stratum_in_proportion():
    rng = np.random.default_rng(1)
    n = 3000
    shares = demo_shares("race_group")
    codes = torch.as_tensor(rng.choice(len(shares), size=n, p=list(shares.values())))
    labels = torch.as_tensor(rng.random(n) < PREVALENCE).long()
    strata = codes * 2 + labels
    rows = torch.arange(n)
    order = stratified_order(rows, strata, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(n))  # a permutation
    totals = torch.bincount(strata, minlength=12).double()

    def worst_deviation(o):
        return max(float((torch.bincount(strata[o[s:s + BATCH]], minlength=12).double() - totals * BATCH / n).abs().max())
                   for s in range(0, n - BATCH + 1, BATCH))

    assert worst_deviation(order) <= 3.0  # proportional up to a row or two (12 strata)
    assert worst_deviation(torch.randperm(n, generator=torch.Generator().manual_seed(0))) > 6.0  # plain shuffling
    again = stratified_order(rows, strata, torch.Generator().manual_seed(0))
    assert torch.equal(order, again)


def test_history_counts_the_steps_each_group_contributed(tiny_ws):
    config = TrainConfig(fusion="multifair", fair_attr="gender", epochs=2, patience=2, hidden_dim=16, batch_size=32,
                         device="cpu", modulator_params={"stratified_batches": True, "min_pos": 2, "min_neg": 2})
    result = train_run(config, tiny_ws)
    history = pd.read_csv(result.run_dir / "history.csv")
    steps = history["modulator_steps"]
    assert (steps > 0).all()
    for group in ("F", "M"):
        column = history[f"modulator_gate_groups[{group}]"]
        assert ((column >= 0) & (column <= steps)).all() and column.sum() > 0
    assert {"modulator_factor[ehr]", "modulator_factor[cxr]", "modulator_gate_open"} <= set(history.columns)
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["method"] == "multifair[min_neg=2,min_pos=2,stratified_batches=true,fair_attr=gender]"


def test_paper_and_official_code_on_the_same_fold_get_distinct_labels(tiny_ws):
    base = dict(fusion="multifair", epochs=1, patience=1, hidden_dim=16, batch_size=32, device="cpu")
    paper = train_run(TrainConfig(**base), tiny_ws)
    official = train_run(TrainConfig(**base, modulator_params={"variant": "official-code"}), tiny_ws)
    labels = [json.loads((r.run_dir / "config.json").read_text())["method"] for r in (paper, official)]
    assert labels == ["multifair", "multifair[official-code]"]  # never pooled as one method in the results


def test_the_report_shows_paper_and_official_code_as_two_rows(tiny_ws):
    from mmfair.core import pipeline
    from mmfair.core.evaluation.tidy import read_results
    from mmfair.core.reporting.tables import clean_table

    base = dict(fusion="multifair", epochs=1, patience=1, hidden_dim=16, batch_size=32, device="cpu")
    configs = [TrainConfig(**base), TrainConfig(**base, modulator_params={"variant": "official-code"})]
    pipeline.train(configs, tiny_ws, bootstrap=5)
    table = clean_table(read_results(tiny_ws.metrics_csv))
    assert sorted(table["method"]) == ["multifair", "multifair[official-code]"]
    assert (table["runs"].astype(str) == "1").all()  # one run each: nothing pooled as "mean ± sd (2 runs)"
