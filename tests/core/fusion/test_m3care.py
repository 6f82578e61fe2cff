"""M3Care: neighbours come from a fixed bank of training stays, so a stay's prediction ignores its batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion_batches import one_cpu_thread  # noqa: F401  (autouse fixture)
from mmfair.core.fusion import FusionSpec
from mmfair.core.registry import FUSIONS
from mmfair.core.training.data import Split

F, D, T = 3, 12, 8



def make_spec() -> FusionSpec:
    return FusionSpec(n_features=F, cxr_dim=D, n_outputs=2, hidden_dim=16, dropout=0.1, seq_len=T)


def make_split(n: int, seed: int, cxr_every: int = 2) -> Split:
    g = torch.Generator().manual_seed(seed)
    present = torch.arange(n) % cxr_every == 0
    cxr = torch.randn(n, D, generator=g)
    cxr[~present] = 0.0
    return Split(name="train", rows=np.arange(n), inputs={"ehr": torch.randn(n, T, 2 * F, generator=g), "cxr": cxr},
                 present={"ehr": torch.ones(n, dtype=torch.bool), "cxr": present},
                 labels=(torch.rand(n, 2, generator=g) > 0.5).float())


def make_model(bank_size: int = 6, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = FUSIONS.get("m3care")
    return cls(make_spec(), cls.Params(bank_size=bank_size, **params))


def predict(model, split: Split, index) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(split.batch(torch.as_tensor(index))).logits


def test_bank_holds_a_seeded_sample_of_training_stays_with_a_cxr():
    train = make_split(20, seed=1)
    model = make_model(bank_size=6)
    model.prepare(train)
    assert int(model.bank_count) == 6
    with_cxr = train.inputs["cxr"][train.present["cxr"]]
    for row in model.bank_cxr:  # every bank CXR is a real training image, never a placeholder
        assert (row == with_cxr).all(dim=1).any()
    again = make_model(bank_size=6)
    again.prepare(train)
    assert torch.equal(again.bank_ehr, model.bank_ehr)
    other_seed = make_model(bank_size=6, bank_seed=1)
    other_seed.prepare(train)
    assert not torch.equal(other_seed.bank_ehr, model.bank_ehr)
    small = make_model(bank_size=50)  # fewer stays with a CXR (10) than the bank size
    small.prepare(train)
    assert int(small.bank_count) == 10 and "bank_ehr" in small.state_dict()


@pytest.mark.parametrize("stay", [0, 1, 6, 7])  # even rows have a CXR, odd rows do not
def test_prediction_is_identical_whatever_else_is_in_the_batch(stay):
    model = make_model()
    model.prepare(make_split(20, seed=1))
    test = make_split(24, seed=2)
    alone = predict(model, test, [stay])[0]
    others = [i for i in range(24) if i != stay]
    compositions = [
        list(range(24)),
        list(reversed(range(24))),
        [stay] + others[:3],
        others[10:] + [stay] + others[:5],
        torch.randperm(24, generator=torch.Generator().manual_seed(3)).tolist(),
    ]
    for index in compositions:
        logits = predict(model, test, index)
        assert torch.equal(logits[index.index(stay)], alone)


def test_absent_cxr_is_imputed_from_the_bank_cxrs():
    train, test = make_split(20, seed=1), make_split(10, seed=2)
    no_cxr = [1, 3, 5]
    empty_bank = make_model()  # same weights, never prepared: nothing to impute from
    model = make_model()
    model.prepare(train)
    imputed = predict(model, test, no_cxr)
    assert not torch.allclose(imputed, predict(empty_bank, test, no_cxr))
    changed = make_model()
    changed.prepare(train)
    changed.bank_cxr.mul_(-3.0)  # the bank's images, not only their EHR, drive the imputation
    assert not torch.allclose(imputed, predict(changed, test, no_cxr))


def test_a_stay_in_the_bank_is_not_its_own_neighbour():
    train = make_split(20, seed=1)
    model = make_model()
    model.prepare(train)
    n = int(model.bank_count)
    own = model._own_bank_rows(model.bank_ehr[:n], n)
    assert torch.equal(own, torch.eye(n, dtype=torch.bool))
    outsiders = make_split(5, seed=9).inputs["ehr"]
    assert not model._own_bank_rows(outsiders, n).any()


def test_placeholders_never_matter_with_a_filled_bank():
    model = make_model()
    model.prepare(make_split(20, seed=1))
    test = make_split(10, seed=2)
    reference = predict(model, test, list(range(10)))
    scrambled = make_split(10, seed=2)
    scrambled.inputs["cxr"][~scrambled.present["cxr"]] = float("nan")
    assert torch.equal(predict(model, scrambled, list(range(10))), reference)


def test_training_reaches_the_graph_and_threshold_and_the_bank_travels_in_the_state_dict():
    train = make_split(20, seed=1)
    model = make_model()
    model.prepare(train)
    model.train()
    out = model(train.batch(torch.arange(12)))
    assert out.aux_losses["stability"] > 0
    (out.logits.sum() + sum(out.aux_losses.values())).backward()
    for name in ("fusion.threshold_logit", "fusion.graphs.cxr.query_layer.weight", "fusion.graphs.cxr.bank_layer.weight",
                 "fusion.graphs.ehr.gate.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    restored = make_model()
    restored.load_state_dict(model.state_dict())
    test = make_split(10, seed=2)
    assert torch.equal(predict(restored, test, list(range(10))), predict(model, test, list(range(10))))


def test_stability_weight_zero_switches_the_regulariser_off():
    model = make_model(stability_weight=0.0)
    model.prepare(make_split(20, seed=1))
    out = model.train()(make_split(8, seed=2).batch(torch.arange(8)))
    assert float(out.aux_losses["stability"].detach()) == 0.0
