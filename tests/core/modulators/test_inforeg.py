"""InfoReg: the prime-learning-window rule, the proximal pull, the dominant-only slow-down, missing CXR, fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mmfair.core.training  # noqa: F401  (registers tasks, modulators and presets)
from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.fusion import FusionSpec
from mmfair.core.registry import FUSIONS, TASKS
from mmfair.core.training.data import Split
from mmfair.core.modulators import PRESETS, build_modulator
from mmfair.core.modulators.inforeg import add_proximal_gradient, relative_trace_growth, slowdown_factor
from mmfair.core.training.trainer import cpu_threads, fit

N_FEAT, CXR_DIM, SEQ, B = 3, 8, 6, 32
TASK = TASKS.get("mortality")


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


def make_model(fusion: str = "early", seed: int = 0):
    torch.manual_seed(seed)
    spec = FusionSpec(n_features=N_FEAT, cxr_dim=CXR_DIM, n_outputs=1, hidden_dim=8, dropout=0.0, seq_len=SEQ)
    return FUSIONS.get(fusion)(spec)


def make_split(n: int = B, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    cxr_present = torch.rand(n, generator=g) < 0.7
    labels = (torch.rand(n, 1, generator=g) < 0.4).float()
    labels[:2] = torch.tensor([[0.0], [1.0]])
    ehr = torch.randn(n, SEQ, 2 * N_FEAT, generator=g) + labels[:, :, None]
    cxr = torch.randn(n, CXR_DIM, generator=g) + 2 * labels
    cxr[~cxr_present] = 0.0
    return Split("train", np.arange(n), {"ehr": ehr, "cxr": cxr},
                 {"ehr": torch.ones(n, dtype=torch.bool), "cxr": cxr_present}, labels)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "patience": 5, "hidden_dim": 8, "batch_size": 16, "device": "cpu",
                          "fusion": "early", **kw})


def setup(params=None, model=None, split=None, modulate_via="grad"):
    model, split = model or make_model(), split or make_split()
    mod = build_modulator("inforeg", params)
    mod.setup(model, TASK, split, cfg(modulate_via=modulate_via), None, torch.device("cpu"))
    mod.on_epoch_start(1)
    return mod, model, split


def test_inforeg_is_a_preset_and_needs_two_modalities():
    assert PRESETS["inforeg"].base == "early" and PRESETS["inforeg"].modulator == "inforeg"
    with pytest.raises(ConfigError, match="two modalities"):
        setup(model=make_model("ehr"))


def test_prime_window_follows_the_relative_growth_of_the_trace():
    assert relative_trace_growth([], 10) == 1.0 and relative_trace_growth([3.0], 10) == 1.0  # open at first
    assert relative_trace_growth([1.0, 2.0], 10) == pytest.approx((1.5 - 1.0) / 1.5)  # short history: what exists
    assert relative_trace_growth([1.0, 2.0, 4.0], 1) == pytest.approx(0.5)
    assert relative_trace_growth([4.0, 2.0, 1.0], 1) < 0  # information acquisition slowing: window closed
    mod, _, _ = setup({"history": 1, "k_threshold": 0.1})
    mod.traces = {"ehr": [1.0, 2.0], "cxr": [2.0, 2.05]}
    mod.on_epoch_start(3)
    assert mod.window == {"ehr": True, "cxr": False}


def test_proximal_term_pulls_parameters_toward_the_stored_state():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    anchors = [p.detach().clone() for p in params]
    add_proximal_gradient(params, anchors, beta=2.0)
    assert all(p.grad is None for p in params)  # a parameter without a gradient is left alone
    for p in params:
        p.grad = torch.zeros_like(p)
    add_proximal_gradient(params, anchors, beta=2.0)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in params)  # at the stored state: no pull
    for p in params:
        p.data += torch.randn_like(p)
    distance = sum(float((p.detach() - a).pow(2).sum()) for p, a in zip(params, anchors))
    add_proximal_gradient(params, anchors, beta=2.0)
    for p, a in zip(params, anchors):
        torch.testing.assert_close(p.grad, 2.0 * (p.detach() - a))
    with torch.no_grad():
        for p in params:
            p -= 0.1 * p.grad  # one gradient step moves every parameter toward its stored value
    assert sum(float((p.detach() - a).pow(2).sum()) for p, a in zip(params, anchors)) < distance


def step_grads(model, batch, mod=None):
    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss = model.training_loss(out, batch, TASK) if mod is None else mod.loss(model, out, batch, TASK)
    loss.backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if mod is not None:
        mod.after_backward(model, out, batch)
    return raw, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_slowdown_and_pull_touch_only_the_dominant_encoder():
    mod, model, split = setup({"proximal_strength": 0.5, "slowdown_gamma": 2.0})
    with torch.no_grad():  # move away from the epoch-start state so the proximal term is non-zero
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = split.batch(slice(0, B))
    raw, modulated = step_grads(model, batch, mod)
    assert mod.regulated is not None
    dominant, gap = mod.regulated
    assert 0 < gap < 1
    factor = slowdown_factor(gap, 2.0, 0.9)
    beta = 0.5 * math.exp(gap)
    anchors = dict(zip([n for n, _ in model.named_parameters() if n.startswith(f"encoders.{dominant}.")], mod.anchors[dominant]))
    for name, p in model.named_parameters():
        if name not in raw:
            continue
        if name.startswith(f"encoders.{dominant}."):
            torch.testing.assert_close(modulated[name], raw[name] * factor + beta * (p.detach() - anchors[name]))
        else:
            assert torch.equal(modulated[name], raw[name])  # the other encoder, fusion and head untouched


def test_lr_mode_moves_the_slowdown_to_the_learning_rate_and_keeps_the_pull():
    """modulate_via=lr: the gradient keeps the task term, the pull is β(θ − θ̄)/factor, and the step's
    learning-rate factor of the dominant encoder is the slow-down (so under SGD the update equals grad mode's)."""
    mod, model, split = setup({"proximal_strength": 0.5, "slowdown_gamma": 2.0}, modulate_via="lr")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    raw, modulated = step_grads(model, split.batch(slice(0, B)), mod)
    dominant, gap = mod.regulated
    factor = slowdown_factor(gap, 2.0, 0.9)
    assert mod.lr_factors() == {f"encoder:{dominant}": factor} and mod.lr_factors() == {}  # read once per step
    anchors = dict(zip([n for n, _ in model.named_parameters() if n.startswith(f"encoders.{dominant}.")], mod.anchors[dominant]))
    for name, p in model.named_parameters():
        if name.startswith(f"encoders.{dominant}.") and name in raw:
            pull = 0.5 * math.exp(gap) * (p.detach() - anchors[name])
            torch.testing.assert_close(modulated[name] * factor, raw[name] * factor + pull)


def test_no_regulation_outside_the_window():
    mod, model, split = setup()
    mod.window = {"ehr": False, "cxr": False}
    raw, modulated = step_grads(model, split.batch(slice(0, B)), mod)
    assert mod.regulated is None and all(torch.equal(raw[n], modulated[n]) for n in raw)


def test_stays_without_cxr_do_not_enter_the_scores_or_the_cxr_head():
    mod, model, split = setup()
    batch = split.batch(slice(0, B))
    absent = ~batch["present"]["cxr"]
    scrambled = {**batch, "inputs": dict(batch["inputs"]), "labels": batch["labels"].clone()}
    scrambled["labels"][absent] = 1 - scrambled["labels"][absent]  # only EHR-only stays change
    mod.loss(model, model(batch), batch, TASK)
    first = mod.regulated
    mod2, model2, _ = setup(model=make_model(), split=split)
    mod2.loss(model2, model2(scrambled), scrambled, TASK)
    assert (first is None) == (mod2.regulated is None)
    if first is not None:
        assert first[0] == mod2.regulated[0] and first[1] == pytest.approx(mod2.regulated[1])


def test_fisher_trace_history_grows_per_epoch_and_survives_state_dict():
    mod, model, split = setup()
    step_grads(model, split.batch(slice(0, B)), mod)
    row = mod.on_epoch_end(1)
    assert len(mod.traces["ehr"]) == 1 and mod.traces["ehr"][0] > 0 and "modulator_fisher_trace[cxr]" in row
    other, _, _ = setup(model=model, split=split)
    other.load_state_dict(mod.state_dict())
    assert other.traces == mod.traces


def test_inforeg_trains_end_to_end_with_fit():
    split, val = make_split(48, seed=1), make_split(24, seed=2)
    outcome = fit(make_model(), TASK, {"train": split, "val": val}, cfg(), torch.device("cpu"),
                  modulator=build_modulator("inforeg"))
    assert len(outcome.history) == 2 and np.isfinite(outcome.history["train_loss"]).all()
    assert "modulator_k[ehr]" in outcome.history.columns


def test_inforeg_uses_a_models_own_unimodal_logits():
    mod, _, _ = setup(model=make_model("late"))
    assert mod.heads is None
