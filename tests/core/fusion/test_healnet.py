"""HEALNet: per-stay skip of the CXR update, weight tying, tokenisers (the contract test covers the rest)."""

from __future__ import annotations

import pydantic
import pytest
import torch

import mmfair.core.fusion  # noqa: F401  (registers the methods)
from fusion_batches import one_cpu_thread, random_batch  # noqa: F401  (one_cpu_thread: autouse fixture)
from mmfair.core.fusion import FusionSpec
from mmfair.core.fusion._healnet import CXRChunkTokens, fourier_position_features
from mmfair.core.registry import FUSIONS

F, D, T, B = 4, 12, 48, 6
SOME = torch.tensor([True, False, True, False, False, True])



def make_spec(hidden_dim: int = 16, cxr_dim: int = D) -> FusionSpec:
    return FusionSpec(n_features=F, cxr_dim=cxr_dim, n_outputs=2, hidden_dim=hidden_dim, dropout=0.1, seq_len=T)


def make_model(**params):
    torch.manual_seed(0)
    cls = FUSIONS.get("healnet")
    return cls(make_spec(), cls.Params(**params)).eval()


def make_batch(present: torch.Tensor, seed: int = 0) -> dict:
    return random_batch(present, F, D, T, seed=seed, zero_labels=True)


def ehr_only_logits(model, batch) -> torch.Tensor:
    ehr_tokens = model.encoders["ehr"](batch["inputs"]["ehr"])
    return model.head(model.fusion(ehr_tokens, None))


def test_stay_without_cxr_gets_exactly_the_ehr_only_prediction():
    model = make_model(depth=2)
    batch = make_batch(SOME)
    with torch.no_grad():
        fused = model(batch).logits
        reference = ehr_only_logits(model, batch)
    assert torch.equal(fused[~SOME], reference[~SOME])
    # a present CXR is really attended: those stays move away from the EHR-only prediction
    assert (fused[SOME] - reference[SOME]).abs().min() > 1e-6


@pytest.mark.parametrize("presence", [SOME, torch.zeros(B, dtype=torch.bool)], ids=["some_absent", "all_absent"])
def test_batched_prediction_equals_per_sample_computation(presence):
    model = make_model(depth=3)
    batch = make_batch(presence, seed=1)
    with torch.no_grad():
        batched = model(batch).logits
        for i in range(B):
            one = {"inputs": {m: x[i:i + 1] for m, x in batch["inputs"].items()},
                   "present": {m: x[i:i + 1] for m, x in batch["present"].items()}, "labels": batch["labels"][i:i + 1]}
            single = model(one).logits
            if not presence[i]:
                torch.testing.assert_close(single, ehr_only_logits(model, one), rtol=0, atol=0)
            torch.testing.assert_close(batched[i:i + 1], single, rtol=1e-5, atol=1e-6)


def test_cxr_weights_change_only_stays_with_a_cxr():
    model = make_model()
    batch = make_batch(SOME)
    with torch.no_grad():
        before = model(batch).logits
        for p in list(model.encoders["cxr"].parameters()) + list(model.fusion.cross["cxr"].parameters()):
            p.add_(torch.randn_like(p) * 0.5)
        after = model(batch).logits
    assert torch.equal(before[~SOME], after[~SOME])
    assert not torch.allclose(before[SOME], after[SOME])


def test_weights_are_shared_across_depth_but_depth_changes_the_computation():
    shallow, deep = make_model(depth=1), make_model(depth=3)
    assert sum(p.numel() for p in shallow.parameters()) == sum(p.numel() for p in deep.parameters())
    deep.load_state_dict(shallow.state_dict())
    batch = make_batch(SOME)
    with torch.no_grad():
        assert not torch.allclose(shallow(batch).logits, deep(batch).logits)


def test_fourier_features_encode_the_time_position():
    features = fourier_position_features(48, bands=3, max_freq=10.0)
    assert features.shape == (48, 2 * 3 + 1)
    torch.testing.assert_close(features[:, -1], torch.linspace(-1, 1, 48))
    assert features.abs().max() <= 1.0 + 1e-6
    # distinct hours get distinct encodings (the attention can tell the steps apart)
    assert torch.cdist(features, features).add(torch.eye(48)).min() > 1e-3


def test_cxr_chunks_are_contiguous_and_padded():
    torch.manual_seed(0)
    tokens = CXRChunkTokens(cxr_dim=10, n_tokens=4)  # 10 → 4 chunks of 3, the last padded by 2 zeros
    assert (tokens.n_tokens, tokens.token_dim, tokens.padding) == (4, 3, 2)
    x = torch.randn(2, 10)
    changed = x.clone()
    changed[:, 4] += 5.0  # dimension 4 lies in chunk 1
    with torch.no_grad():
        diff = (tokens(x) - tokens(changed)).abs().amax(dim=(0, 2))
    assert diff[1] > 0 and torch.all(diff[[0, 2, 3]] == 0)


def test_params_are_validated():
    cls = FUSIONS.get("healnet")
    with pytest.raises(pydantic.ValidationError):
        cls.Params(depth=4)
    with pytest.raises(ValueError, match="heads"):
        cls(make_spec(hidden_dim=18), cls.Params(heads=4))


def test_learns_a_cxr_signal_on_a_tiny_problem():
    """Label = sign of a CXR dimension: training must fit it on stays with a CXR (the CXR path carries signal)."""
    torch.manual_seed(0)
    model = FUSIONS.get("healnet")(FusionSpec(n_features=F, cxr_dim=D, n_outputs=1, hidden_dim=16, dropout=0.0,
                                              seq_len=8))
    present = torch.ones(32, dtype=torch.bool)
    g = torch.Generator().manual_seed(3)
    cxr = torch.randn(32, D, generator=g)
    batch = {"inputs": {"ehr": torch.randn(32, 8, 2 * F, generator=g), "cxr": cxr},
             "present": {"ehr": present, "cxr": present}, "labels": (cxr[:, :1] > 0).float()}
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch).logits, batch["labels"])
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = ((model(batch).logits > 0).float() == batch["labels"]).float().mean()
    assert accuracy >= 0.9
