"""Modulators: properties that could fail (reference/multifair.md §4.6), presets end to end, determinism."""

from __future__ import annotations

import importlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import mmfair.core.training  # noqa: F401  (registers tasks, modulators and presets)
from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.fusion import FusionSpec
from mmfair.core.registry import FUSIONS, MODULATORS, TASKS
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training.data import Split
from mmfair.core.modulators import PRESETS, Groups, RowWeightedTask, build_modulator, resolve_modulator
from mmfair.core.modulators.cggm import cggm_coefficients
from mmfair.core.modulators.group_dro import GroupDRO
from mmfair.core.modulators.multifair import group_factor, modality_coefficients
from mmfair.core.modulators.ogm_ge import ogm_coefficients
from mmfair.core.training.runs import compute_run_id
from mmfair.core.training.trainer import cpu_threads

N_FEAT, CXR_DIM, SEQ, B = 3, 8, 6, 40
TASK = TASKS.get("mortality")


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


def make_model(fusion: str = "early", seed: int = 0):
    torch.manual_seed(seed)
    spec = FusionSpec(n_features=N_FEAT, cxr_dim=CXR_DIM, n_outputs=1, hidden_dim=8, ehr_encoder="lstm",
                      dropout=0.0, seq_len=SEQ)
    return FUSIONS.get(fusion)(spec)


def make_split(n: int = B, cxr_share: float = 0.7, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    cxr_present = torch.rand(n, generator=g) < cxr_share
    labels = (torch.rand(n, 1, generator=g) < 0.4).float()
    labels[:4] = torch.tensor([[0.0], [1.0], [0.0], [1.0]])
    ehr = torch.randn(n, SEQ, 2 * N_FEAT, generator=g) + labels[:, :, None]
    cxr = torch.randn(n, CXR_DIM, generator=g) + 2 * labels
    cxr[~cxr_present] = 0.0
    return Split("train", np.arange(n), {"ehr": ehr, "cxr": cxr},
                 {"ehr": torch.ones(n, dtype=torch.bool), "cxr": cxr_present}, labels)


def make_groups(codes, names=None) -> Groups:
    codes = torch.as_tensor(codes, dtype=torch.long)
    names = names or tuple(f"g{i}" for i in range(int(codes.max()) + 1))
    return Groups("race_group", tuple(names), codes)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "patience": 2, "hidden_dim": 16, "batch_size": 32, "device": "cpu", **kw})


def setup_modulator(name, params, model, split, groups=None, config=None):
    mod = build_modulator(name, params)
    mod.setup(model, TASK, split, config or cfg(fusion="early", modulate_via="grad"), groups, torch.device("cpu"))
    mod.on_epoch_start(1)
    return mod


def step_grads(model, batch, modulator=None):
    """Loss and gradients of one step (no optimiser step), with or without the modulator's hooks."""
    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss = model.training_loss(out, batch, TASK) if modulator is None else modulator.loss(model, out, batch, TASK)
    loss.backward()
    if modulator is not None:
        modulator.after_backward(model, out, batch)
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def batch_with_groups(split, groups):
    batch = split.batch(slice(0, len(split)))
    batch["groups"] = groups.codes
    return batch


# ---- registry and documentation ---------------------------------------------------------------
def test_modulators_and_presets_are_registered_with_papers_and_deviations():
    assert {"ogm-ge", "cggm", "multifair", "group-dro", "fairgrad"} <= set(MODULATORS.names())
    for name in MODULATORS.names():
        entry = MODULATORS.entry(name)
        assert entry.summary and entry.paper
        doc = importlib.import_module(entry.obj.__module__).__doc__ or ""
        assert "deviation" in doc.lower() and "et al" in doc
    for name, preset in PRESETS.items():
        entry = FUSIONS.entry(name)
        assert entry.paper and preset.modulator in MODULATORS
        assert issubclass(entry.obj, FUSIONS.get(preset.base))


# ---- OGM-GE -----------------------------------------------------------------------------------
def test_ogm_coefficient_in_unit_interval_and_one_for_the_weaker_modality():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = {"ehr": float(rng.uniform(1e-4, 1)), "cxr": float(rng.uniform(1e-4, 1)), "static": float(rng.uniform(1e-4, 1))}
        k = ogm_coefficients(scores, alpha=float(rng.uniform(0.01, 5)))
        assert all(0 < v <= 1 for v in k.values())
        assert k[min(scores, key=scores.get)] == 1.0
    assert ogm_coefficients({"ehr": 0.5, "cxr": 0.5}, 0.1) == {"ehr": 1.0, "cxr": 1.0}
    ks = [ogm_coefficients({"ehr": r * 0.1, "cxr": 0.1}, 0.3)["ehr"] for r in (1.1, 2, 5, 50, 1e6)]
    assert all(a > b for a, b in zip(ks, ks[1:])) and ks[-1] > 0  # monotone decreasing, never 0
    assert ogm_coefficients({"ehr": 0.9, "cxr": 0.3}, 0.1)["ehr"] == pytest.approx(1 - np.tanh(0.3))


def test_ogm_scales_only_the_dominant_encoder_and_noise_is_seeded():
    model, split = make_model(), make_split()
    mod = setup_modulator("ogm-ge", {"noise": False}, model, split)
    batch = split.batch(slice(0, B))
    _, plain = step_grads(model, batch)
    _, modulated = step_grads(model, batch, mod)
    k = mod.coefficients
    assert set(k) == {"ehr", "cxr"} and max(k.values()) == 1.0 and all(0 < v <= 1 for v in k.values())
    for name, g in plain.items():
        if name.startswith("encoders."):
            torch.testing.assert_close(modulated[name], g * k[name.split(".")[1]], rtol=0, atol=0)
        else:
            assert torch.equal(modulated[name], g)  # fusion and head untouched
    noisy = [setup_modulator("ogm-ge", {}, model, split) for _ in range(2)]
    a, b = (step_grads(model, batch, m)[1] for m in noisy)
    assert all(torch.equal(a[n], b[n]) for n in a)  # same seed → same noise
    assert any(not torch.equal(a[n], modulated[n]) for n in a if n.startswith("encoders."))


def test_ogm_lr_mode_moves_k_to_the_learning_rate_and_keeps_the_noise_outside_it():
    """lr mode: gradient g + noise/k with the step's lr factor k, i.e. k·lr·g + lr·noise — grad mode's
    update k·g + noise under SGD, with the same seeded noise."""
    model, split = make_model(), make_split()
    batch = split.batch(slice(0, B))
    _, plain = step_grads(model, batch)
    via_grad = setup_modulator("ogm-ge", {}, model, split)
    _, g_grad = step_grads(model, batch, via_grad)
    via_lr = setup_modulator("ogm-ge", {}, model, split, config=cfg(fusion="early"))
    _, g_lr = step_grads(model, batch, via_lr)
    k = via_lr.coefficients
    assert k == via_grad.coefficients and min(k.values()) < 1
    assert via_lr.lr_factors() == {f"encoder:{m}": v for m, v in k.items() if v != 1.0}
    for name, g in plain.items():
        if name.startswith("encoders."):
            km = k[name.split(".")[1]]
            torch.testing.assert_close(g_lr[name] * km, g_grad[name], rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(g_lr[name], g)


def test_ogm_uses_the_models_unimodal_logits_when_it_has_them():
    model, split = make_model("late"), make_split()
    mod = setup_modulator("ogm-ge", {"noise": False}, model, split)
    assert mod.probes is None
    with pytest.raises(ConfigError, match="two modalities"):
        setup_modulator("ogm-ge", {}, make_model("ehr"), split)
    with pytest.raises(ConfigError, match="one fused head layer"):  # late has two unimodal heads, no fused one
        setup_modulator("multifair", {}, model, split, make_groups([0] * B))
    assert setup_modulator("multifair", {"lambda_gm": 0.0}, model, split, make_groups([0] * B)).head_weight is None


# ---- MultiFair --------------------------------------------------------------------------------
def test_balancing_coefficient_properties():
    rng = np.random.default_rng(1)
    for m in (2, 3, 4):
        names = [f"m{i}" for i in range(m)]
        deltas = dict(zip(names, rng.normal(size=m)))
        raw = modality_coefficients(deltas, normalize=False)
        assert all(0 <= v <= 1 for v in raw.values()) and sum(raw.values()) == pytest.approx(m - 1)
        norm = modality_coefficients(deltas, normalize=True)
        assert np.mean(list(norm.values())) == pytest.approx(1.0)
        equal = modality_coefficients({n: 0.03 * (-1) ** i for i, n in enumerate(names)}, normalize=True)
        assert all(v == pytest.approx(1.0) for v in equal.values())  # balanced → exactly plain scale
        assert modality_coefficients(dict.fromkeys(names, 0.0), normalize=True) == dict.fromkeys(names, 1.0)
        perm = dict(zip(names, np.roll(list(deltas.values()), 1)))
        assert list(modality_coefficients(perm, False).values()) == pytest.approx(np.roll(list(raw.values()), 1).tolist())
    assert modality_coefficients({"ehr": 0.2}, normalize=False) == {"ehr": 1.0}  # M = 1 guarded
    assert modality_coefficients({"a": 0.2, "b": 0.1}, False)["a"] < modality_coefficients({"a": 0.2, "b": 0.1}, False)["b"]


def test_group_factor_properties():
    ema = np.array([0.9, 0.7, 0.5])
    assert group_factor(np.array([0.8]), np.array([1.0]), 0.3, 0.04) == 1.0  # one group
    assert group_factor(np.array([0.7, 0.7, 0.7]), np.array([0.2, 0.5, 0.3]), 0.3, 0.04) == pytest.approx(1.0)
    assert group_factor(ema, np.full(3, 1 / 3), 0.3, 0.04) == pytest.approx(1.0)  # uniform shares: F = 1
    assert group_factor(ema, np.array([0.1, 0.1, 0.8]), 0.3, 0.04) > 1  # worse group over-represented
    assert group_factor(ema, np.array([1.0, 0.0, 0.0]), 0.3, 0.04) < 0  # the raw formula can flip the sign


@pytest.mark.parametrize("variant,expected", [("paper", 0.25), ("official-code", None)])
def test_group_factors_are_clamped_in_the_paper_variant(variant, expected):
    model, split = make_model(), make_split()
    groups = make_groups([0] * B + [1] * 0, names=("g0", "g1"))
    mod = setup_modulator("multifair", {"variant": variant}, model, split, groups)
    mod.group_ema = np.array([[0.9, 0.5], [0.9, 0.5]])
    present = {m: torch.ones(B, dtype=torch.bool) for m in ("ehr", "cxr")}
    Y = torch.zeros(B, 1)  # one class: the paper variant leaves the EMAs as they are
    scores = {m: torch.randn(B, 1) for m in ("ehr", "cxr")}
    factors = mod._update_groups(scores, {m: torch.sigmoid(s) for m, s in scores.items()}, Y, present, groups.codes)
    if expected is not None:
        assert factors == {"ehr": expected, "cxr": expected}
        mod.group_ema = np.array([[0.5, 0.9], [0.5, 0.9]])  # now the batch is all the worse group
        high = mod._update_groups(scores, scores, Y, present, groups.codes)
        assert all(1 < v <= 4.0 for v in high.values())
    else:
        assert all(v < 0 for v in factors.values())  # the release's unclamped sign flip


def test_multifair_with_balanced_modalities_and_one_group_is_plain_training():
    model, split = make_model(), make_split()
    groups = make_groups([0] * B)
    mod = setup_modulator("multifair", {"lambda_gm": 0.0}, model, split, groups)  # paper variant, ρ = 1
    batch = batch_with_groups(split, groups)
    loss_plain, plain = step_grads(model, batch)
    loss_mod, modulated = step_grads(model, batch, mod)
    assert mod.kappa == {"ehr": 1.0, "cxr": 1.0} and mod.gate is False
    assert torch.equal(loss_plain, loss_mod)
    assert plain.keys() == modulated.keys() and all(torch.equal(plain[n], modulated[n]) for n in plain)
    # second step: balanced change of the unimodal AUCs (equal |Δ|) → coefficient exactly 1
    mod.prev_auc = {"ehr": 0.6, "cxr": 0.6}
    import mmfair.core.modulators.multifair as mf

    original = mf.exact_auc
    mf.exact_auc = lambda y, s: 0.65
    try:
        _, again = step_grads(model, batch, mod)
    finally:
        mf.exact_auc = original
    assert mod.B == {"ehr": 1.0, "cxr": 1.0}
    assert all(torch.equal(plain[n], again[n]) for n in plain)


def test_closed_gate_leaves_the_group_level_unused_and_one_backward_runs_per_step():
    model, split = make_model(), make_split()
    groups = make_groups([0, 1] * (B // 2))
    mod = setup_modulator("multifair", {"lambda_gm": 0.0, "tau": 1.0}, model, split, groups)  # gap never > 1
    batch = batch_with_groups(split, groups)
    _, plain = step_grads(model, batch)
    calls = []
    handle = next(model.encoders["ehr"].parameters()).register_hook(lambda g: calls.append(1))
    try:
        _, modulated = step_grads(model, batch, mod)
    finally:
        handle.remove()
    assert mod.gate is False and calls == [1]  # one full backward through the encoders
    assert all(torch.equal(plain[n], modulated[n]) for n in plain)


def test_single_group_with_direction_term_changes_only_the_head_weight():
    model, split = make_model(), make_split()
    groups = make_groups([0] * B)
    mod = setup_modulator("multifair", {}, model, split, groups)
    batch = batch_with_groups(split, groups)
    _, plain = step_grads(model, batch)
    _, modulated = step_grads(model, batch, mod)
    changed = {n for n in plain if not torch.equal(plain[n], modulated[n])}
    assert changed == {"head.weight"}


def test_direction_term_has_nonzero_gradient_that_reaches_only_the_head_weight():
    model, split = make_model(), make_split()
    mod = setup_modulator("multifair", {}, model, split, make_groups([0, 1] * (B // 2)))
    mod.B = {"ehr": 0.7, "cxr": 1.3}
    loss = mod.direction_loss()
    named = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(named.values()) + list(mod.aux.parameters()), allow_unused=True)
    by_name = dict(zip(list(named) + [f"aux.{n}" for n, _ in mod.aux.named_parameters()], grads))
    assert by_name["head.weight"] is not None and by_name["head.weight"].abs().sum() > 0
    assert all(g is None or g.abs().sum() == 0 for n, g in by_name.items() if n != "head.weight")
    # value 0 when every cosine is 1
    with torch.no_grad():
        for m in ("ehr", "cxr"):
            mod.aux[m][-1].weight.copy_(model.head.weight)
    assert float(mod.direction_loss().detach()) == pytest.approx(0.0, abs=1e-6)


def test_fairness_term_carries_gradient_and_gate_opens_on_a_gap():
    model, split = make_model(), make_split()
    codes = torch.tensor([0, 1] * (B // 2))
    mod = setup_modulator("multifair", {"min_pos": 2, "min_neg": 2}, model, split, make_groups(codes))  # 20-stay groups
    logits = torch.randn(B, 1, requires_grad=True)
    Y = split.labels
    loss = mod.fairness_loss(logits, Y, torch.ones(B, dtype=torch.bool), codes)
    (grad,) = torch.autograd.grad(loss, logits)
    assert float(loss.detach()) > 0 and grad.abs().sum() > 0
    fused = torch.where(codes[:, None] == 0, Y * 5, torch.randn(B, 1))  # perfect in g0, random in g1
    assert mod._gate(fused, Y, torch.ones(B, dtype=torch.bool), codes)
    assert not mod._gate(fused, Y, torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.long))
    # end to end: with the gate open the fused loss gets the fairness term and the encoders its gradient
    batch = batch_with_groups(split, make_groups(codes))
    mod.params = mod.params.model_copy(update={"tau": 1e-6, "lambda_gm": 0.0, "gate_alpha": None})  # any gap opens it
    loss_plain, _ = step_grads(model, batch)
    loss_mod, _ = step_grads(model, batch, mod)
    assert mod.gate and float(loss_mod) > float(loss_plain)


def test_multifair_absent_cxr_batch_is_finite_and_keeps_cxr_statistics():
    model, split = make_model(), make_split(cxr_share=0.0)
    groups = make_groups([0, 1] * (B // 2))
    mod = setup_modulator("multifair", {}, model, split, groups)
    batch = batch_with_groups(split, groups)
    loss, grads = step_grads(model, batch, mod)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values())
    assert np.isnan(mod.prev_auc["cxr"]) and np.isnan(mod.group_ema[1]).all()
    assert all(g.abs().sum() == 0 for n, g in grads.items() if n.startswith("encoders.cxr."))


def test_multifair_official_code_variant_has_dead_terms():
    model, split = make_model(), make_split()
    codes = torch.tensor([0, 1] * (B // 2))
    mod = setup_modulator("multifair", {"variant": "official-code", "tau": 1e-6}, model, split, make_groups(codes))
    assert mod.params.rho == 1.2 and mod.params.f_min is None and not mod.params.rho_normalize
    batch = batch_with_groups(split, make_groups(codes))
    _, plain = step_grads(model, batch)
    _, modulated = step_grads(model, batch, mod)
    for n, g in plain.items():  # fusion and head: exactly the plain gradient (no L_gm / L_fair gradient)
        if not n.startswith("encoders."):
            assert torch.equal(g, modulated[n])
        else:
            m = n.split(".")[1]
            torch.testing.assert_close(modulated[n], g * mod.kappa[m], rtol=0, atol=0)


def test_multifair_state_round_trip_through_a_weights_only_checkpoint():
    model, split = make_model(), make_split()
    groups = make_groups([0, 1] * (B // 2))
    mod = setup_modulator("multifair", {}, model, split, groups)
    step_grads(model, batch_with_groups(split, groups), mod)
    buf = io.BytesIO()
    torch.save(mod.state_dict(), buf)
    buf.seek(0)
    other = setup_modulator("multifair", {}, model, split, groups)
    other.load_state_dict(torch.load(buf, weights_only=True))
    np.testing.assert_array_equal(other.group_ema, mod.group_ema)
    assert other.B == mod.B and all(torch.equal(a, b) for a, b in zip(other.aux.parameters(), mod.aux.parameters()))


# ---- CGGM -------------------------------------------------------------------------------------
def test_cggm_coefficients_and_direction_term():
    rng = np.random.default_rng(2)
    for m in (2, 3):
        deltas = {f"m{i}": float(v) for i, v in enumerate(rng.uniform(0.01, 0.2, size=m))}
        b = cggm_coefficients(deltas)
        assert sum(b.values()) == pytest.approx(m - 1)
        assert b[max(deltas, key=deltas.get)] == min(b.values())  # the faster-improving modality is slowed most
    assert cggm_coefficients({"a": 0.0, "b": 0.0}) == {"a": 0.5, "b": 0.5}
    model, split = make_model(), make_split()
    mod = setup_modulator("cggm", {}, model, split)
    mod.B = {"ehr": 0.2, "cxr": 0.8}
    named = dict(model.named_parameters())
    grads = dict(zip(named, torch.autograd.grad(mod.direction_loss(), list(named.values()), allow_unused=True)))
    assert grads["head.weight"].abs().sum() > 0
    assert all(g is None for n, g in grads.items() if n != "head.weight")
    batch = split.batch(slice(0, B))
    _, plain = step_grads(model, batch)
    _, modulated = step_grads(model, batch, mod)
    for n, g in plain.items():
        if n.startswith("encoders."):
            torch.testing.assert_close(modulated[n], g * (1.3 * mod.B[n.split(".")[1]]), rtol=0, atol=0)
        elif n != "head.weight":
            assert torch.equal(modulated[n], g)


def test_cggm_history_reports_factors_and_how_often_b_reversed_an_update(monkeypatch):
    import mmfair.core.modulators.cggm as cggm_module

    model, split = make_model(), make_split()
    mod = setup_modulator("cggm", {"lambda_gm": 0.0}, model, split)
    accuracies = iter([0.5, 0.6, 0.9, 0.4])  # (ehr, cxr) per step: Δ = (0.5, 0.6), then (+0.4, −0.2)
    monkeypatch.setattr(cggm_module, "batch_accuracy", lambda task, logits, labels: next(accuracies))
    batch = split.batch(slice(0, B))
    step_grads(model, batch, mod)
    first = dict(mod.B)
    step_grads(model, batch, mod)
    assert mod.B["ehr"] == pytest.approx((0.2 - 0.4) / 0.2) and mod.B["cxr"] == pytest.approx((0.2 + 0.2) / 0.2)
    row = mod.on_epoch_end(1)
    assert row["modulator_B_negative[ehr]"] == 0.5 and row["modulator_B_negative[cxr]"] == 0.0
    assert row["modulator_factor[ehr]"] == pytest.approx(1.3 * (first["ehr"] - 1.0) / 2)
    assert row["modulator_factor[cxr]"] == pytest.approx(1.3 * (first["cxr"] + 2.0) / 2)


# ---- group DRO --------------------------------------------------------------------------------
def test_group_dro_weights_move_toward_the_worse_group():
    model, split = make_model(), make_split()
    codes = torch.tensor([0, 1] * (B // 2))
    mod: GroupDRO = setup_modulator("group-dro", {"eta": 0.5}, model, split, make_groups(codes))
    assert torch.allclose(mod.q, torch.full((2,), 0.5, dtype=torch.float64))
    mod.update(torch.tensor([0.2, 1.0]), torch.tensor([5, 5]))
    assert mod.q[1] > mod.q[0] and float(mod.q.sum()) == pytest.approx(1.0)
    # through the loss: make group 1's stays the badly fitted ones
    batch = batch_with_groups(split, make_groups(codes))
    batch["labels"] = torch.where(codes[:, None] == 1, 1 - batch["labels"], batch["labels"])
    mod.q = torch.full((2,), 0.5, dtype=torch.float64)
    out = model(batch)
    losses, _ = mod.group_losses(model, out, batch, TASK)
    worse = int(torch.stack(losses).argmax())
    for _ in range(3):
        mod.loss(model, model(batch), batch, TASK)
    assert int(mod.q.argmax()) == worse
    with torch.no_grad():
        loss = mod.loss(model, model(batch), batch, TASK)
        expected = sum(float(q) * float(l) for q, l in zip(mod.q, mod.group_losses(model, model(batch), batch, TASK)[0]))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


# ---- FairGrad ---------------------------------------------------------------------------------
def test_row_weighted_task_with_unit_weights_is_the_task_loss():
    logits, labels = torch.randn(12, 1), (torch.rand(12, 1) > 0.5).float()
    mask = torch.rand(12) > 0.3
    assert torch.equal(RowWeightedTask(TASK, torch.ones(12)).loss(logits, labels, mask), TASK.loss(logits, labels, mask))
    multi = TASKS.get("phenotype")
    logits, labels = torch.randn(12, 4), (torch.rand(12, 4) > 0.5).float()
    assert torch.equal(RowWeightedTask(multi).loss(logits, labels), multi.loss(logits, labels))


def test_fairgrad_downweights_the_advantaged_cell():
    model, split = make_model(), make_split()
    codes = torch.tensor([0, 1] * (B // 2))
    mod = setup_modulator("fairgrad", {"fairness_rate": 0.1}, model, split, make_groups(codes))
    assert torch.equal(mod.weights(), torch.ones(2, 2, dtype=torch.float64))
    violation = torch.tensor([[0.0, 0.0], [0.3, -0.3]], dtype=torch.float64)  # group 0 advantaged among y = 1
    mod.update(violation)
    w = mod.weights()
    assert w[1, 0] < 1 < w[1, 1] and torch.allclose(w[0], torch.ones(2, dtype=torch.float64))
    batch = batch_with_groups(split, make_groups(codes))
    assert torch.isfinite(mod.loss(model, model(batch), batch, TASK))
    with pytest.raises(ConfigError, match="multilabel"):
        mod.setup(model, TASKS.get("phenotype"), split, cfg(), make_groups(codes), torch.device("cpu"))


# ---- config resolution, presets and runs ------------------------------------------------------
def test_preset_resolution_and_errors():
    resolved = resolve_modulator(cfg(fusion="multifair"))
    assert resolved.fusion == "early" and resolved.modulator == "multifair"
    assert resolved.modulator_params["variant"] == "paper" and resolved.modulator_params["rho"] == 1.0
    assert resolve_modulator(cfg(fusion="early", modulator="multifair")) == resolved
    official = resolve_modulator(cfg(fusion="multifair", modulator_params={"variant": "official-code"}))
    assert official.modulator_params["rho"] == 1.2
    with pytest.raises(ConfigError, match="preset"):
        resolve_modulator(cfg(fusion="multifair", modulator="ogm-ge"))
    with pytest.raises(ConfigError, match="no_such"):
        resolve_modulator(cfg(fusion="group-dro", modulator_params={"no_such": 1}))
    with pytest.raises(ConfigError, match="no modulator"):
        resolve_modulator(cfg(fusion="early", modulator_params={"eta": 1}))
    base = compute_run_id(resolve_modulator(cfg(fusion="early")), "fp")
    ids = {base, compute_run_id(resolved, "fp"), compute_run_id(official, "fp"),
           compute_run_id(resolve_modulator(cfg(fusion="multifair", modulator_params={"beta": 0.5})), "fp")}
    assert len(ids) == 4  # the run id changes with the modulator and each of its params
    ogm = resolve_modulator(cfg(fusion="ogm-ge"))
    assert compute_run_id(ogm, "fp") == compute_run_id(ogm.model_copy(update={"fair_attr": "gender"}), "fp")
    assert compute_run_id(resolved, "fp") != compute_run_id(resolved.model_copy(update={"fair_attr": "gender"}), "fp")


@pytest.mark.parametrize("preset", ["multifair", "ogm-ge", "group-dro", "fairgrad", "cggm"])
def test_preset_trains_end_to_end_and_records_its_parts(tiny_ws, preset):
    result = train_run(cfg(fusion=preset, epochs=2), tiny_ws)
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["method"] == preset and info["fusion"] == "early" and info["modulator"] == preset
    assert info["modulator_params"] == resolve_modulator(cfg(fusion=preset)).modulator_params
    if MODULATORS.get(preset).needs_groups:
        assert info["fair_attr"] == "race_group" and "WHITE" in info["fair_groups"]
    history = pd.read_csv(result.run_dir / "history.csv")
    assert any(c.startswith("modulator_") for c in history.columns)
    same = train_run(cfg(fusion="early", modulator=preset, epochs=2), tiny_ws)
    assert same.skipped and same.run_id == result.run_id
    run = load_run(result.run_dir)
    assert run.config.modulator == preset
    saved = pd.read_csv(result.run_dir / "predictions_test.csv", keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(predict(run, "test"), saved)


def test_modulated_run_is_deterministic_on_cpu_and_other_attribute_changes_the_run(tiny_ws):
    first = train_run(cfg(fusion="multifair", fair_attr="gender"), tiny_ws)
    saved = pd.read_csv(first.run_dir / "predictions_test.csv")
    history = pd.read_csv(first.run_dir / "history.csv").drop(columns=["seconds", "peak_memory_mb"])
    shutil.rmtree(first.run_dir)
    second = train_run(cfg(fusion="multifair", fair_attr="gender"), tiny_ws)
    assert second.run_id == first.run_id
    pd.testing.assert_frame_equal(pd.read_csv(second.run_dir / "predictions_test.csv"), saved)
    pd.testing.assert_frame_equal(pd.read_csv(second.run_dir / "history.csv").drop(columns=["seconds", "peak_memory_mb"]), history)
    info = json.loads((second.run_dir / "config.json").read_text())
    assert info["fair_groups"] == ["F", "M"]
    assert train_run(cfg(fusion="multifair"), tiny_ws).run_id != first.run_id
    with pytest.raises(ConfigError, match="fair_attr"):
        train_run(cfg(fusion="multifair", fair_attr="no_such_column"), tiny_ws)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("preset", ["multifair", "ogm-ge"])
def test_interrupted_modulated_run_resumes_to_the_same_result(tiny_ws, preset):
    full = train_run(cfg(fusion=preset, epochs=3, patience=5), tiny_ws)
    expected = pd.read_csv(full.run_dir / "history.csv").drop(columns=["seconds", "peak_memory_mb"])
    predictions = pd.read_csv(full.run_dir / "predictions_test.csv")
    shutil.rmtree(full.run_dir)

    def stop_after_one(description, done, total):
        if done == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_run(cfg(fusion=preset, epochs=3, patience=5), tiny_ws, progress=stop_after_one)
    assert (full.run_dir / "checkpoint.pt").exists()
    resumed = train_run(cfg(fusion=preset, epochs=3, patience=5), tiny_ws)
    got = pd.read_csv(resumed.run_dir / "history.csv").drop(columns=["seconds", "peak_memory_mb"])
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(pd.read_csv(resumed.run_dir / "predictions_test.csv"), predictions)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("preset", ["multifair", "ogm-ge", "group-dro", "fairgrad", "cggm"])
def test_presets_train_on_cuda_with_amp(tiny_ws, preset):
    result = train_run(cfg(fusion=preset, device="cuda", epochs=2), tiny_ws)
    history = pd.read_csv(result.run_dir / "history.csv")
    assert np.isfinite(history["train_loss"]).all()
    run = load_run(result.run_dir, device="cuda")
    saved = pd.read_csv(result.run_dir / "predictions_test.csv", keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(predict(run, "test"), saved)
