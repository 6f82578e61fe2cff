"""Optimizer choice and ``modulate_via``: the modulated encoder's *actual* update shrinks by the factor.

Under Adam/AdamW a factor on the gradient is divided away (each parameter's step is normalised by its own
gradient scale); a factor on the encoder's learning rate is not. These tests train one step through the
real trainer (``fit``) with and without each gradient-scaling modulator on a toy two-encoder model and
compare parameter updates (reference/multifair.md §4.1, §4.6 item 6).
"""

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
from mmfair.core.training.methods import method_name
from mmfair.core.modulators import Groups, Modulator, build_modulator, resolve_modulator
from mmfair.core.training.trainer import build_optimizer, cpu_threads, fit, scaled_learning_rates

N_FEAT, CXR_DIM, SEQ, N = 3, 8, 6, 48
TASK = TASKS.get("mortality")


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


def make_model(seed: int = 0):
    torch.manual_seed(seed)
    spec = FusionSpec(n_features=N_FEAT, cxr_dim=CXR_DIM, n_outputs=1, hidden_dim=8, ehr_encoder="lstm",
                      dropout=0.0, seq_len=SEQ)
    return FUSIONS.get("early")(spec)


def make_split(name: str, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(N, 1, generator=g) < 0.4).float()
    ehr = torch.randn(N, SEQ, 2 * N_FEAT, generator=g) + 0.5 * labels[:, :, None]
    cxr = torch.randn(N, CXR_DIM, generator=g) + 2 * labels
    return Split(name, np.arange(N), {"ehr": ehr, "cxr": cxr},
                 {"ehr": torch.ones(N, dtype=torch.bool), "cxr": torch.ones(N, dtype=torch.bool)}, labels)


SPLITS = {"train": make_split("train", 1), "val": make_split("val", 2)}
GROUPS = Groups("race_group", ("A", "B"), torch.tensor([0, 1] * (N // 2)))


def cfg(**kw) -> TrainConfig:
    # one epoch of one batch = one optimizer step; no clipping, so the comparison is exact
    return TrainConfig(**{"fusion": "early", "epochs": 1, "batch_size": N, "lr": 1e-2, "grad_clip": None,
                          "device": "cpu", **kw})


def one_step(config: TrainConfig, modulator: Modulator | None = None):
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    outcome = fit(model, TASK, SPLITS, config, torch.device("cpu"), modulator=modulator,
                  groups=GROUPS if modulator is not None and modulator.needs_groups else None)
    delta = {n: outcome.state_dict[n] - before[n] for n in before}
    return delta, outcome.history


def encoder_ratio(delta, plain, modality: str, parallel: bool = True) -> float:
    """The signed ratio ⟨Δθ_mod, Δθ_plain⟩ / ‖Δθ_plain‖² over encoder ``modality``'s parameters; with
    ``parallel``, also that Δθ_mod = ratio × Δθ_plain element by element."""
    names = [n for n in plain if n.startswith(f"encoders.{modality}.")]
    mod = torch.cat([delta[n].flatten() for n in names]).double()
    ref = torch.cat([plain[n].flatten() for n in names]).double()
    ratio = float(mod @ ref / (ref @ ref))
    if parallel:
        torch.testing.assert_close(mod, ratio * ref, rtol=1e-4, atol=1e-9)  # the same direction, only scaled
    return ratio


MODULATED = [
    ("ogm-ge", {"noise": False}),
    ("cggm", {}),
    ("multifair", {"rho": 0.6, "gamma": 0.0}),  # paper variant at the paper's mean scale ρ = 0.6
    ("multifair", {"variant": "official-code"}),
]


@pytest.mark.parametrize("name,params", MODULATED, ids=["ogm-ge", "cggm", "multifair-paper", "multifair-official"])
def test_default_lr_mode_shrinks_the_encoders_actual_update_by_the_factor(name, params):
    """Default (AdamW, modulate_via=lr): Δθ_encoder(m) = factor_m × Δθ_encoder(m) of plain training."""
    plain, _ = one_step(cfg())
    delta, history = one_step(cfg(), build_modulator(name, params))
    factors = {m: float(history[f"modulator_factor[{m}]"].iloc[0]) for m in ("ehr", "cxr")}
    assert any(abs(k - 1.0) > 0.05 for k in factors.values())  # something to see
    for m, k in factors.items():  # (a negative CGGM factor reverses the update: a negative learning rate)
        assert encoder_ratio(delta, plain, m) == pytest.approx(k, rel=1e-4)
    for n in plain:  # the fusion MLP is never modulated (the head may get a direction-loss gradient)
        if n.startswith("fusion."):
            torch.testing.assert_close(delta[n], plain[n], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name,params", MODULATED[:3], ids=["ogm-ge", "cggm", "multifair-paper"])
def test_grad_mode_under_adamw_leaves_the_first_update_unchanged(name, params):
    """Documents the defect lr mode exists for: multiplying an encoder's gradient by k leaves Adam's step
    g/√(g²) unchanged, so the factor does nothing to the update (up to Adam's eps)."""
    plain, _ = one_step(cfg())
    delta, history = one_step(cfg(modulate_via="grad"), build_modulator(name, params))
    factors = {m: float(history[f"modulator_factor[{m}]"].iloc[0]) for m in ("ehr", "cxr")}
    assert any(abs(k - 1.0) > 0.05 for k in factors.values())
    for m, k in factors.items():  # elementwise only up to eps/(k|g|) for tiny gradients, hence the norm ratio
        assert encoder_ratio(delta, plain, m, parallel=False) == pytest.approx(1.0 if k > 0 else -1.0, abs=0.02)


class ConstantFactor(Modulator):
    """A constant factor on the EHR encoder every step (the limiting case of a persistent modulation)."""

    scales_gradients = True
    name = "constant"

    def __init__(self, k: float) -> None:
        super().__init__(Modulator.Params())
        self.k = k

    def setup(self, model, task, train, config, groups, device) -> None:
        super().setup(model, task, train, config, groups, device)
        self.encoders = {m: [p for n, p in model.named_parameters() if n.startswith(f"encoders.{m}.")]
                         for m in model.modalities}

    def after_backward(self, model, output, batch) -> None:
        self.scale_encoders(self.encoders, {"ehr": self.k, "cxr": 1.0})


def train_steps(config: TrainConfig, modulator: Modulator | None):
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    outcome = fit(model, TASK, SPLITS, config, torch.device("cpu"), modulator=modulator)
    return {n: outcome.state_dict[n] - before[n] for n in before}


def test_constant_factor_over_many_adamw_steps_is_inert_via_grad_and_effective_via_lr():
    config = dict(batch_size=8)  # one epoch of 6 optimizer steps
    plain = train_steps(cfg(**config), None)
    via_grad = train_steps(cfg(modulate_via="grad", **config), ConstantFactor(0.25))
    via_lr = train_steps(cfg(**config), ConstantFactor(0.25))
    ehr = [n for n in plain if n.startswith("encoders.ehr.")]
    norm = lambda d: math.sqrt(sum(float(d[n].double().pow(2).sum()) for n in ehr))  # noqa: E731
    assert norm(via_grad) == pytest.approx(norm(plain), rel=0.02)  # AdamW normalises the factor away
    assert norm(via_lr) == pytest.approx(0.25 * norm(plain), rel=0.1)  # lr mode: a quarter of the movement


def test_under_plain_sgd_grad_and_lr_modes_give_the_same_update():
    sgd = dict(optimizer="sgd", momentum=0.0, weight_decay=0.0)  # (lr mode scales the decay term too)
    via_grad = train_steps(cfg(modulate_via="grad", **sgd), ConstantFactor(0.25))
    via_lr = train_steps(cfg(**sgd), ConstantFactor(0.25))
    for n in via_grad:
        torch.testing.assert_close(via_lr[n], via_grad[n], rtol=1e-4, atol=1e-8)


def test_optimizer_choice_and_named_parameter_groups():
    model = make_model()
    for name, cls in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        opt = build_optimizer(model, cfg(optimizer=name))
        assert type(opt) is cls
        assert [g["name"] for g in opt.param_groups] == ["encoder:ehr", "encoder:cxr", "rest"]
        assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sgd = build_optimizer(model, cfg(optimizer="sgd", momentum=0.5, weight_decay=0.01))
    assert all(g["momentum"] == 0.5 and g["weight_decay"] == 0.01 for g in sgd.param_groups)
    with scaled_learning_rates(sgd, {"encoder:cxr": 0.5}):
        assert [g["lr"] for g in sgd.param_groups] == [1e-2, 5e-3, 1e-2]
    assert [g["lr"] for g in sgd.param_groups] == [1e-2] * 3  # restored after the step
    with pytest.raises(ValueError, match="momentum"):
        cfg(momentum=0.5)  # adamw has no momentum option


def test_default_adamw_training_is_unchanged_by_the_parameter_groups():
    """One AdamW over named groups updates exactly as one AdamW over model.parameters() (today's behaviour)."""
    a, b = make_model(), make_model()
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=1e-4)
    opt_b = build_optimizer(b, cfg(weight_decay=1e-4))
    batch = SPLITS["train"].batch(slice(0, N))
    for model, opt in ((a, opt_a), (b, opt_b)):
        for _ in range(3):
            opt.zero_grad()
            model.training_loss(model(batch), batch, TASK).backward()
            opt.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n


def test_optimizer_and_modulate_via_enter_config_label_and_identity():
    from mmfair.core.training.runs import compute_run_id

    base = resolve_modulator(cfg(fusion="ogm-ge"))
    grad = resolve_modulator(cfg(fusion="ogm-ge", modulate_via="grad"))
    sgd = resolve_modulator(cfg(fusion="ogm-ge", optimizer="sgd", modulate_via="grad"))
    assert method_name(base) == "ogm-ge"
    assert method_name(grad) == "ogm-ge[modulate_via=grad]"
    assert method_name(sgd) == "ogm-ge[modulate_via=grad,optimizer=sgd]"
    assert method_name(resolve_modulator(cfg(fusion="late", optimizer="sgd"))) == "late[optimizer=sgd]"
    assert method_name(cfg(fusion="late", optimizer="sgd", momentum=0.5)) == "late[momentum=0.5,optimizer=sgd]"
    # one scheme for every parameter a run differs in; an unresolved spec gets its run's label
    assert method_name(cfg(fusion="multifair", modulator_params={"variant": "official-code"})) == "multifair[official-code]"
    assert method_name(cfg(fusion="multifair", modulator_params={"variant": "official-code", "rho": 1.2})) == "multifair[official-code]"
    assert method_name(cfg(fusion="ogm-ge", modulator_params={"alpha": 0.5})) == "ogm-ge[alpha=0.5]"
    assert method_name(cfg(fusion="group-dro", fair_attr="gender")) == "group-dro[fair_attr=gender]"
    assert method_name(cfg(fusion="group-dro", fair_attr="race_group")) == "group-dro"  # the default attribute
    assert method_name(cfg(fusion="ogm-ge", fair_attr="gender")) == "ogm-ge"  # not group-aware: fair_attr unused
    assert len({compute_run_id(c, "fp") for c in (base, grad, sgd)}) == 3
    assert {"optimizer", "momentum", "modulate_via"} <= set(sgd.model_dump())
    with pytest.raises(ConfigError, match="gradient-scaling"):
        resolve_modulator(cfg(fusion="late", modulate_via="grad"))  # nothing to modulate
    with pytest.raises(ConfigError, match="group-dro scales none"):
        resolve_modulator(cfg(fusion="group-dro", modulate_via="grad"))
