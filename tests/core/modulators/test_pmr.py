"""PMR: prototypes, the rebalancing coefficient, missing CXR, binary/multilabel/multiclass tasks, fit."""

from __future__ import annotations

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
from mmfair.core.modulators.pmr import rebalance_coefficients
from mmfair.core.training.trainer import cpu_threads, fit

N_FEAT, CXR_DIM, SEQ, B = 3, 8, 6, 32


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


TASK_OF_KIND = {"binary": "mortality", "multilabel": "phenotype", "multiclass": "los"}


def _Task(kind: str):
    """The registered task of that kind (only its kind and loss matter on these tiny splits)."""
    if kind not in TASK_OF_KIND:
        return type("_Other", (), {"kind": kind})()
    return TASKS.get(TASK_OF_KIND[kind])


def make_model(n_outputs: int = 1, fusion: str = "early", seed: int = 0):
    torch.manual_seed(seed)
    spec = FusionSpec(n_features=N_FEAT, cxr_dim=CXR_DIM, n_outputs=n_outputs, hidden_dim=8, dropout=0.0, seq_len=SEQ)
    return FUSIONS.get(fusion)(spec)


def make_split(kind: str = "binary", n: int = B, seed: int = 0, cxr_signal: float = 2.0) -> Split:
    g = torch.Generator().manual_seed(seed)
    cxr_present = torch.rand(n, generator=g) < 0.7
    if kind == "multiclass":
        labels = torch.arange(n) % 3
        signal = labels.float()[:, None]
    else:
        width = 1 if kind == "binary" else 3
        labels = (torch.rand(n, width, generator=g) < 0.4).float()
        labels[:2] = torch.tensor([[0.0] * width, [1.0] * width])
        signal = labels[:, :1]
    ehr = torch.randn(n, SEQ, 2 * N_FEAT, generator=g) + signal[:, :, None]
    cxr = torch.randn(n, CXR_DIM, generator=g) + cxr_signal * signal
    cxr[~cxr_present] = 0.0
    return Split("train", np.arange(n), {"ehr": ehr, "cxr": cxr},
                 {"ehr": torch.ones(n, dtype=torch.bool), "cxr": cxr_present}, labels)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "patience": 5, "hidden_dim": 8, "batch_size": 16, "device": "cpu",
                          "fusion": "early", **kw})


N_OUT = {"binary": 1, "multilabel": 3, "multiclass": 3}


def setup(kind="binary", params=None, split=None, model=None):
    split = split or make_split(kind)
    model = model or make_model(N_OUT[kind])
    mod = build_modulator("pmr", params)
    mod.setup(model, _Task(kind), split, cfg(), None, torch.device("cpu"))
    mod.on_epoch_start(1)
    return mod, model, split


def test_pmr_is_a_preset_and_refuses_a_unimodal_model_or_unknown_task():
    assert PRESETS["pmr"].base == "early" and PRESETS["pmr"].modulator == "pmr"
    with pytest.raises(ConfigError, match="two modalities"):
        setup(model=make_model(fusion="ehr"))
    with pytest.raises(ConfigError, match="task kind"):
        build_modulator("pmr").setup(make_model(), _Task("regression"), make_split(), cfg(), None, torch.device("cpu"))


def test_rebalancing_coefficient_is_alpha_for_the_slower_modalities_only():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = {m: float(rng.uniform(0.05, 1)) for m in ("ehr", "cxr", "static")}
        alpha = float(rng.uniform(0.1, 3))
        c = rebalance_coefficients(scores, alpha=alpha)
        fastest = max(scores, key=scores.get)
        assert c[fastest] == 0.0  # the faster modality gets no prototype push
        assert all(v == alpha for m, v in c.items() if m != fastest)
    assert rebalance_coefficients({"ehr": 0.5, "cxr": 0.5}, 1.0) == {"ehr": 0.0, "cxr": 0.0}  # balanced: nothing
    assert rebalance_coefficients({"ehr": 0.8, "cxr": 0.4}, 0.5) == {"ehr": 0.0, "cxr": 0.5}
    assert rebalance_coefficients({"ehr": 0.8, "cxr": 0.79}, 1.0, tolerance=0.05)["cxr"] == 0.0


@pytest.mark.parametrize("kind", ["binary", "multilabel", "multiclass"])
def test_prototypes_are_class_means_over_present_stays(kind):
    mod, model, split = setup(kind)
    model.eval()
    with torch.no_grad():
        emb = model(split.batch(slice(0, len(split)))).embeddings
    present = split.present["cxr"]
    if kind == "multiclass":
        expected = torch.stack([emb["cxr"][present & (split.labels == k)].mean(0) for k in range(3)])
    else:
        y = split.labels > 0.5
        expected = torch.stack([torch.stack([emb["cxr"][present & ~y[:, j]].mean(0), emb["cxr"][present & y[:, j]].mean(0)])
                                for j in range(y.shape[1])])
    torch.testing.assert_close(mod.prototypes["cxr"], expected, rtol=1e-5, atol=1e-5)
    assert bool(mod.valid["cxr"].all())


def test_a_stay_without_cxr_contributes_no_cxr_prototype_term():
    mod, model, split = setup(params={"entropy_weight": 0.0})
    batch = split.batch(slice(0, B))
    absent = ~batch["present"]["cxr"]
    cxr = batch["inputs"]["cxr"].clone().requires_grad_(True)
    batch["inputs"]["cxr"] = cxr
    out = model(batch)
    terms = mod.prototype_terms(out, batch)
    assert not bool(terms["cxr"]["mask"][absent].any()) and bool(terms["ehr"]["mask"][absent].all())
    mod.coefficients = {"ehr": 0.0, "cxr": 2.0}
    pce = -(terms["cxr"]["log_p_true"] * terms["cxr"]["mask"]).sum()
    pce.backward()
    assert cxr.grad[absent].abs().sum() == 0 and cxr.grad[~absent].abs().sum() > 0


@pytest.mark.parametrize("kind", ["binary", "multilabel", "multiclass"])
def test_loss_adds_the_slower_modalitys_prototype_term_only(kind):
    split = make_split(kind, cxr_signal=6.0)  # the CXR clusters by class far better than the EHR
    mod, model, _ = setup(kind, {"entropy_weight": 0.0}, split=split)
    batch = split.batch(slice(0, B))
    out = model(batch)
    base = model.training_loss(out, batch, _Task(kind))
    total = mod.loss(model, out, batch, _Task(kind))
    c = mod.coefficients
    slower = [m for m, v in c.items() if v > 0]
    assert len(slower) == 1 and c[slower[0]] == mod.params.alpha
    terms = mod.prototype_terms(out, batch)
    t = terms[slower[0]]
    pce = (-t["log_p_true"] * t["mask"]).sum() / t["mask"].sum()
    torch.testing.assert_close(total, base + c[slower[0]] * pce)


def test_entropy_regularisation_lowers_the_loss_only_in_its_epochs():
    split = make_split(cxr_signal=6.0)
    losses = {}
    for epoch in (1, 3):
        for mu in (0.0, 0.5):
            mod, model, _ = setup(params={"entropy_weight": mu, "entropy_epochs": 2}, split=split)
            mod.on_epoch_start(epoch)
            batch = split.batch(slice(0, B))
            losses[epoch, mu] = float(mod.loss(model, model(batch), batch, _Task("binary")).detach())
    assert losses[1, 0.5] < losses[1, 0.0]  # −μ H with H > 0
    assert losses[3, 0.5] == losses[3, 0.0]


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_pmr_trains_end_to_end_with_fit(kind):
    split, val = make_split(kind, 48, seed=1), make_split(kind, 24, seed=2)
    task = _Task(kind)
    model = make_model(N_OUT[kind])
    outcome = fit(model, task, {"train": split, "val": val}, cfg(), torch.device("cpu"), modulator=build_modulator("pmr"))
    assert len(outcome.history) == 2 and np.isfinite(outcome.history["train_loss"]).all()
    assert "modulator_coef[cxr]" in outcome.history.columns
