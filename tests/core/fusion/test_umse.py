"""UMSE: observed-entry embedding, the skip-bottleneck flag orientation at depth 1 and 2, CLS weighting."""

from __future__ import annotations

import pytest
import torch

import mmfair.core.fusion  # noqa: F401  (registers the methods)
from fusion_batches import one_cpu_thread, random_batch  # noqa: F401  (one_cpu_thread: autouse fixture)
from mmfair.core.fusion import FusionSpec
from mmfair.core.registry import FUSIONS

F, D, T, B, H = 4, 12, 48, 6, 16
SOME = torch.tensor([True, False, True, False, False, True])



def make_model(**params):
    torch.manual_seed(0)
    cls = FUSIONS.get("umse")
    spec = FusionSpec(n_features=F, cxr_dim=D, n_outputs=2, hidden_dim=H, dropout=0.1, seq_len=T)
    return cls(spec, cls.Params(**params)).eval()


def make_batch(present: torch.Tensor, seed: int = 0) -> dict:
    return random_batch(present, F, D, T, seed=seed, zero_labels=True)


def cxr_gradient(model, batch, output: str = "logits") -> torch.Tensor:
    """Per-stay gradient norm of a scalar readout w.r.t. the CXR input."""
    cxr = batch["inputs"]["cxr"].clone().requires_grad_(True)
    fused = model.fuse({**batch, "inputs": {**batch["inputs"], "cxr": cxr}})
    value = model.head(fused.fused) if output == "logits" else getattr(fused, output)
    # a fixed random projection: the sum of a LayerNorm output is constant and would hide the dependence
    projection = torch.randn(value.shape[1:], generator=torch.Generator().manual_seed(0))
    (value * projection).sum().backward()
    return cxr.grad.abs().sum(dim=1)


@pytest.mark.parametrize("depth", [1, 2])
def test_present_cxr_is_attended_and_absent_one_is_not(depth):
    model = make_model(depth=depth)
    grad = cxr_gradient(model, make_batch(SOME))
    assert torch.all(grad[~SOME] == 0)
    assert torch.all(grad[SOME] > 0)


def test_fused_bottleneck_uses_a_present_cxr_already_at_depth_one():
    """The skip-bottleneck choice must be read at depth 1 (CareBench's single layer made it a no-op)."""
    model = make_model(depth=1)
    grad = cxr_gradient(model, make_batch(SOME), output="bottleneck")
    assert torch.all(grad[~SOME] == 0)
    assert torch.all(grad[SOME] > 0)
    # and flipping the flag with the same image changes the prediction
    batch = make_batch(torch.ones(B, dtype=torch.bool))
    flipped = {**batch, "present": {**batch["present"], "cxr": SOME.clone()}}
    with torch.no_grad():
        assert not torch.allclose(model(batch).logits[~SOME], model(flipped).logits[~SOME])


def test_ehr_stream_reads_the_cxr_through_the_bottleneck_only_when_present():
    """At depth 2 the EHR CLS token sees the bottleneck that a present CXR updated in layer 1 (flag the right way round)."""
    model = make_model(depth=2)
    batch = make_batch(SOME)
    changed = {**batch, "inputs": {**batch["inputs"], "cxr": batch["inputs"]["cxr"] + torch.randn(B, D)}}
    with torch.no_grad():
        before, after = model.fuse(batch).cls["ehr"], model.fuse(changed).cls["ehr"]
    assert torch.equal(before[~SOME], after[~SOME])
    assert (before[SOME] - after[SOME]).abs().amax(dim=1).min() > 1e-6


def test_unobserved_entries_never_change_the_output():
    model = make_model()
    batch = make_batch(SOME)
    ehr = batch["inputs"]["ehr"]
    unobserved = ehr[..., F:] < 0.5
    scrambled = ehr.clone()
    scrambled[..., :F] = torch.where(unobserved, torch.full_like(ehr[..., :F], 1e6), ehr[..., :F])
    nan = ehr.clone()
    nan[..., :F] = torch.where(unobserved, torch.full_like(ehr[..., :F], float("nan")), ehr[..., :F])
    moved = ehr.clone()
    first_observed = torch.nonzero(~unobserved[0])[0]
    moved[0, first_observed[0], first_observed[1]] += 3.0
    with torch.no_grad():
        reference = model(batch).logits
        for variant in (scrambled, nan):
            out = model({**batch, "inputs": {**batch["inputs"], "ehr": variant}}).logits
            assert torch.equal(out, reference)
        out = model({**batch, "inputs": {**batch["inputs"], "ehr": moved}}).logits
    assert not torch.allclose(out[0], reference[0])  # an observed value does count
    assert torch.equal(out[1:], reference[1:])


def test_hours_without_any_observation_are_masked_and_an_empty_stay_is_finite():
    model = make_model()
    batch = make_batch(SOME)
    ehr = batch["inputs"]["ehr"].clone()
    ehr[0, :, F:] = 0.0  # stay 0: nothing observed in the window
    tokens, observed = model.encoders["ehr"](ehr)
    assert not observed[0].any() and observed[1:].any()
    with torch.no_grad():
        out = model({**batch, "inputs": {**batch["inputs"], "ehr": ehr}}).logits
    assert torch.isfinite(out).all()


def test_modality_weights_are_a_softmax_over_present_modalities():
    model = make_model()
    with torch.no_grad():
        model.fusion.modality_logits.copy_(torch.tensor([0.3, -0.4]))
        weights = model.fuse(make_batch(SOME)).modality_weights
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(B))
    assert torch.all(weights[~SOME, 1] == 0) and torch.all(weights[~SOME, 0] == 1)
    expected = torch.softmax(torch.tensor([0.3, -0.4]), dim=0)
    torch.testing.assert_close(weights[SOME], expected.expand(int(SOME.sum()), -1))


def test_eval_prediction_does_not_depend_on_the_batch():
    model = make_model(depth=2)
    batch = make_batch(SOME, seed=4)
    with torch.no_grad():
        full = model(batch).logits
        for i in range(B):
            one = {"inputs": {m: x[i:i + 1] for m, x in batch["inputs"].items()},
                   "present": {m: x[i:i + 1] for m, x in batch["present"].items()}, "labels": batch["labels"][i:i + 1]}
            torch.testing.assert_close(model(one).logits, full[i:i + 1], rtol=1e-5, atol=1e-6)
