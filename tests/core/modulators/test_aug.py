"""AUG (``aug`` modulator on ``aug-base``): boosting layers that train, the ratio rule, missing CXR, fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import mmfair.core.training  # noqa: F401  (registers tasks, modulators and presets)
from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.fusion import FusionSpec
from mmfair.core.fusion._aug import AUGNet, AUGParams
from mmfair.core.registry import FUSIONS, TASKS
from mmfair.core.training.data import Split
from mmfair.core.modulators import PRESETS, build_modulator
from mmfair.core.modulators.aug import weaker_modality
from mmfair.core.training.trainer import cpu_threads, fit

N_FEAT, CXR_DIM, SEQ, B = 3, 8, 6, 32
TASK = TASKS.get("mortality")


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


def make_model(seed: int = 0, **params) -> AUGNet:
    torch.manual_seed(seed)
    spec = FusionSpec(n_features=N_FEAT, cxr_dim=CXR_DIM, n_outputs=1, hidden_dim=8, dropout=0.0, seq_len=SEQ)
    return AUGNet(spec, AUGParams(**params))


def make_split(n: int = B, seed: int = 0, cxr_signal: float = 2.0) -> Split:
    g = torch.Generator().manual_seed(seed)
    cxr_present = torch.rand(n, generator=g) < 0.7
    labels = (torch.rand(n, 1, generator=g) < 0.4).float()
    labels[:2] = torch.tensor([[0.0], [1.0]])
    ehr = torch.randn(n, SEQ, 2 * N_FEAT, generator=g) + labels[:, :, None]
    cxr = torch.randn(n, CXR_DIM, generator=g) + cxr_signal * labels
    cxr[~cxr_present] = 0.0
    return Split("train", np.arange(n), {"ehr": ehr, "cxr": cxr},
                 {"ehr": torch.ones(n, dtype=torch.bool), "cxr": cxr_present}, labels)


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "patience": 5, "hidden_dim": 8, "batch_size": 16, "device": "cpu",
                          "fusion": "aug-base", **kw})


def test_aug_is_registered_as_a_preset_on_its_own_architecture():
    assert PRESETS["aug"].base == "aug-base" and PRESETS["aug"].modulator == "aug"
    assert issubclass(FUSIONS.get("aug"), AUGNet)
    with pytest.raises(ConfigError, match="aug-base"):
        build_modulator("aug").setup(FUSIONS.get("early")(make_model().spec), TASK, make_split(), cfg(fusion="early"),
                                     None, torch.device("cpu"))


def test_ratio_rule_picks_the_weaker_modality():
    assert weaker_modality(1.5, lam=1.0, delta=0.01) == "cxr"  # EHR more confident → boost the CXR classifier
    assert weaker_modality(0.5, lam=1.0, delta=0.01) == "ehr"
    assert weaker_modality(1.005, lam=1.0, delta=0.01) is None  # inside the band: no change
    assert weaker_modality(1.15, lam=1.2, delta=0.1) is None


def test_epoch_check_activates_a_layer_on_the_weaker_modality_at_the_next_epoch():
    model, split = make_model(), make_split()
    mod = build_modulator("aug", {"check_every": 3})
    mod.setup(model, TASK, split, cfg(), None, torch.device("cpu"))

    def run_epoch(epoch: int, ehr_score: float, cxr_score: float) -> dict[str, int]:
        mod.on_epoch_start(epoch)
        mod.scores = {"ehr": ehr_score, "cxr": cxr_score}
        mod.on_epoch_end(epoch)
        return {m: model.n_active(m) for m in model.modalities}

    assert run_epoch(1, 9.0, 3.0) == {"ehr": 0, "cxr": 0} and mod.pending == "cxr"  # checked after epoch 1
    restored = build_modulator("aug", {"check_every": 3})
    restored.setup(model, TASK, split, cfg(), None, torch.device("cpu"))
    restored.load_state_dict(mod.state_dict())
    assert restored.pending == "cxr"  # the decision survives a checkpoint
    assert run_epoch(2, 1.0, 9.0) == {"ehr": 0, "cxr": 1} and mod.pending is None  # switched on; no check at 2
    assert run_epoch(3, 1.0, 9.0) == {"ehr": 0, "cxr": 1} and mod.pending == "ehr"  # CXR now stronger
    mod.on_epoch_start(4)
    assert {m: model.n_active(m) for m in model.modalities} == {"ehr": 1, "cxr": 1}


def test_real_scores_come_from_paired_stays_only():
    model, split = make_model(), make_split()
    mod = build_modulator("aug")
    mod.setup(model, TASK, split, cfg(), None, torch.device("cpu"))
    mod.on_epoch_start(1)
    batch = split.batch(slice(0, B))
    mod.loss(model, model(batch), batch, TASK)
    paired = int(batch["present"]["cxr"].sum())
    assert 0 < mod.scores["ehr"] < paired and 0 < mod.scores["cxr"] < paired  # sums of probabilities over paired rows


def test_an_activated_boosting_layer_trains_and_inactive_ones_get_no_gradient():
    model, split = make_model(max_boost=2), make_split()
    assert model.activate_boost("cxr")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # built before, as the trainer does
    active, inactive = model.boost_parameters("cxr", 0), model.boost_parameters("cxr", 1) + model.boost_parameters("ehr", 0)
    before = [p.detach().clone() for p in active + inactive]
    batch = split.batch(slice(0, B))
    loss = model.training_loss(model(batch), batch, TASK)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in active)
    assert all(p.grad is None for p in inactive)
    optimizer.step()
    assert all(not torch.equal(p, b) for p, b in zip(active, before[: len(active)]))
    assert all(torch.equal(p, b) for p, b in zip(inactive, before[len(active):]))


def test_boost_count_is_capped_and_state_dict_shapes_never_change():
    model = make_model(max_boost=1)
    keys = {k: v.shape for k, v in model.state_dict().items()}
    assert model.activate_boost("ehr") and not model.activate_boost("ehr")
    assert {k: v.shape for k, v in model.state_dict().items()} == keys
    fresh = make_model(max_boost=1, seed=1)
    fresh.load_state_dict(model.state_dict())
    assert fresh.n_active("ehr") == 1 and fresh.n_active("cxr") == 0


def test_prediction_mixes_logits_with_alpha_and_uses_ehr_alone_without_cxr():
    model, split = make_model(alpha=0.7).eval(), make_split()
    model.activate_boost("cxr")
    batch = split.batch(slice(0, B))
    with torch.no_grad():
        out = model(batch)
    present = batch["present"]["cxr"]
    z_ehr, z_cxr = out.unimodal_logits["ehr"], out.unimodal_logits["cxr"]
    torch.testing.assert_close(out.logits[present], 0.7 * z_ehr[present] + 0.3 * z_cxr[present])
    assert torch.equal(out.logits[~present], z_ehr[~present])


def test_a_stay_without_cxr_gives_the_cxr_branch_no_gradient():
    model, split = make_model(), make_split()
    model.activate_boost("cxr")
    batch = split.batch(slice(0, B))
    absent = ~batch["present"]["cxr"]
    inputs = batch["inputs"]["cxr"].clone().requires_grad_(True)
    batch["inputs"]["cxr"] = inputs
    model.training_loss(model(batch), batch, TASK).backward()
    assert inputs.grad[absent].abs().sum() == 0 and inputs.grad[~absent].abs().sum() > 0


def test_aug_trains_end_to_end_with_fit():
    split, val = make_split(48, seed=1), make_split(24, seed=2)
    model = make_model()
    mod = build_modulator("aug", {"check_every": 1, "delta": 0.0})
    outcome = fit(model, TASK, {"train": split, "val": val}, cfg(epochs=3), torch.device("cpu"), modulator=mod)
    history: pd.DataFrame = outcome.history
    assert len(history) == 3 and np.isfinite(history["train_loss"]).all()
    assert "modulator_ratio" in history.columns
    assert int(model.active_boosts.sum()) >= 1  # ratio checks after epochs 1 and 2 switched layers on
