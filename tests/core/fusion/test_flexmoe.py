"""Flex-MoE: top-k routing, per-combination routers, missing embedding, gate loss (the contract test covers the rest)."""

from __future__ import annotations

import pydantic
import pytest
import torch

import mmfair.core.fusion  # noqa: F401  (registers the methods)
from fusion_batches import one_cpu_thread, random_batch  # noqa: F401  (one_cpu_thread: autouse fixture)
from mmfair.core.fusion import FusionSpec
from mmfair.core.fusion._flexmoe import SparseMoE, squared_coefficient_of_variation
from mmfair.core.registry import FUSIONS

F, D, T, B, H = 4, 12, 48, 6, 16
SOME = torch.tensor([True, False, True, False, False, True])



def make_model(**params):
    torch.manual_seed(0)
    cls = FUSIONS.get("flexmoe")
    spec = FusionSpec(n_features=F, cxr_dim=D, n_outputs=2, hidden_dim=H, dropout=0.1, seq_len=T)
    return cls(spec, cls.Params(**params))


def make_batch(present: torch.Tensor, seed: int = 0) -> dict:
    return random_batch(present, F, D, T, seed=seed)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("experts", "top_k"), [(4, 2), (8, 3), (4, 1)])
def test_each_token_goes_to_exactly_k_experts_with_weights_summing_to_one(training, experts, top_k):
    torch.manual_seed(0)
    moe = SparseMoE(H, experts, top_k, dropout=0.0).train(training)
    x = torch.randn(50, H)
    combination = torch.randint(0, 2, (50,))
    gates, _ = moe.route(x, combination)
    assert torch.all((gates > 0).sum(dim=1) == top_k)
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(50))
    assert torch.all(gates >= 0)


def test_moe_output_equals_dispatch_to_the_chosen_experts():
    torch.manual_seed(0)
    moe = SparseMoE(H, 4, 2, dropout=0.0).eval()
    x = torch.randn(1, 3, H)
    combination = torch.tensor([1])
    with torch.no_grad():
        out, _ = moe(x, combination)
        gates, _ = moe.route(x[0], combination.expand(3))
        bank = moe.experts
        for token in range(3):
            expected = torch.zeros(H)
            for e in torch.nonzero(gates[token]).flatten().tolist():
                hidden = torch.nn.functional.gelu(x[0, token] @ bank.w_in[e] + bank.b_in[e])
                expected += gates[token, e] * (hidden @ bank.w_out[e] + bank.b_out[e])
            torch.testing.assert_close(out[0, token], expected, rtol=1e-5, atol=1e-5)


def test_router_is_chosen_per_stay_by_its_modality_combination():
    model = make_model().eval()
    batch = make_batch(SOME)
    with torch.no_grad():
        before = model(batch).logits
        for p in model.fusion.moe.routers["ehr_cxr"].parameters():
            p.add_(torch.randn_like(p) * 2)
        after_full = model(batch).logits
        for p in model.fusion.moe.routers["ehr"].parameters():
            p.add_(torch.randn_like(p) * 2)
        after_both = model(batch).logits
    # the {ehr, cxr} router moves only stays with a CXR; the {ehr} router only stays without one
    assert torch.equal(before[~SOME], after_full[~SOME]) and not torch.allclose(before[SOME], after_full[SOME])
    assert torch.equal(after_full[SOME], after_both[SOME]) and not torch.allclose(after_full[~SOME], after_both[~SOME])


def test_absent_cxr_tokens_are_the_learned_missing_embedding():
    model = make_model().eval()
    batch = make_batch(SOME)
    with torch.no_grad():
        ehr = model.encoders["ehr"](batch["inputs"]["ehr"])
        cxr = model.encoders["cxr"](batch["inputs"]["cxr"])
        tokens = model.fusion.patch_tokens(ehr, cxr, SOME)
        patches = model.params.patches
        assert tokens.shape == (B, 2 * patches, H)
        for i in torch.nonzero(~SOME).flatten().tolist():
            torch.testing.assert_close(tokens[i, patches:], model.fusion.missing_cxr, rtol=0, atol=0)
        assert not torch.allclose(tokens[SOME, patches:], model.fusion.missing_cxr.expand(int(SOME.sum()), -1, -1))
        before = model(batch).logits
        model.fusion.missing_cxr.add_(torch.randn_like(model.fusion.missing_cxr))
        after = model(batch).logits
    assert torch.equal(before[SOME], after[SOME])
    assert not torch.allclose(before[~SOME], after[~SOME])


def test_gate_loss_is_positive_weighted_and_differentiable():
    model = make_model(gate_loss_weight=0.05).train()
    batch = make_batch(SOME)
    out = model(batch)
    gate = out.aux_losses["gate"]
    assert gate.dim() == 0 and gate.item() > 0
    gate.backward()
    for router in model.fusion.moe.routers.values():
        assert router.w_gate.weight.grad is not None and router.w_gate.weight.grad.abs().sum() > 0
        assert router.w_noise.weight.grad.abs().sum() > 0  # through the smooth load estimate
    silent = make_model(gate_loss_weight=0.0).train()
    assert silent(batch).aux_losses["gate"].item() == 0.0


def test_squared_coefficient_of_variation_is_zero_only_when_balanced():
    assert squared_coefficient_of_variation(torch.tensor([2.0, 2.0, 2.0, 2.0])).item() == pytest.approx(0.0)
    assert squared_coefficient_of_variation(torch.tensor([4.0, 0.0, 0.0, 0.0])).item() == pytest.approx(3.0)


def test_eval_prediction_does_not_depend_on_the_batch():
    model = make_model().eval()
    batch = make_batch(SOME, seed=2)
    with torch.no_grad():
        full = model(batch).logits
        for i in range(B):
            one = {"inputs": {m: x[i:i + 1] for m, x in batch["inputs"].items()},
                   "present": {m: x[i:i + 1] for m, x in batch["present"].items()}, "labels": batch["labels"][i:i + 1]}
            torch.testing.assert_close(model(one).logits, full[i:i + 1], rtol=1e-5, atol=1e-6)


def test_top_k_above_experts_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="top_k"):
        FUSIONS.get("flexmoe").Params(experts=2, top_k=3)


@pytest.mark.parametrize("training", [True, False])
def test_routing_accepts_fp32_softmax_into_bf16_gates_as_cuda_autocast_produces(monkeypatch, training):
    # CUDA autocast runs the router's Linear in half precision but softmax in fp32; CPU autocast keeps softmax
    # in bf16, so the CUDA dtype mix is reproduced here by upcasting softmax the way CUDA's autocast policy does.
    real_softmax = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda x, dim, **kw: real_softmax(x.float(), dim=dim, **kw))
    torch.manual_seed(0)
    moe = SparseMoE(H, 4, 2, dropout=0.0).train(training)
    x = torch.randn(2, 5, H)
    combination = torch.tensor([0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gates, gate_loss = moe.route(x.reshape(-1, H), combination[:, None].expand(2, 5).reshape(-1))
        out, _ = moe(x, combination)
    assert gates.dtype == torch.float32 and gate_loss.dtype == torch.float32
    assert torch.all((gates > 0).sum(dim=1) == 2)
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(10))
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
