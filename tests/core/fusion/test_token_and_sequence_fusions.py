"""Properties of ``attention``, ``medfuse`` and ``utde`` (and the ``bilstm`` encoder) that could fail.

The contract test covers shapes, gradients and placeholder scrambling for every registered method;
these check each method's own mechanism."""

from __future__ import annotations

import pytest
import torch

import mmfair.core.fusion  # noqa: F401  (registers the methods)
from fusion_batches import BinaryTask, one_cpu_thread  # noqa: F401  (one_cpu_thread: autouse fixture)
from mmfair.core.encoders.ehr import build_ehr_encoder
from mmfair.core.fusion import FusionSpec
from mmfair.core.fusion._medfuse import MedFuse
from mmfair.core.fusion._utde import MultiTimeAttention
from mmfair.core.registry import FUSIONS

F, D, T, B = 4, 12, 48, 8
NEW = ["attention", "medfuse", "utde"]



def spec(n_outputs: int = 2, encoder: str = "lstm", output_kind: str = "sigmoid") -> FusionSpec:
    return FusionSpec(n_features=F, cxr_dim=D, n_outputs=n_outputs, hidden_dim=16, ehr_encoder=encoder,
                      dropout=0.1, output_kind=output_kind, seq_len=T)


def batch(present_cxr: torch.Tensor, seed: int = 0, n_outputs: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    ehr = torch.randn(B, T, 2 * F, generator=g)
    ehr[..., F:] = (torch.rand(B, T, F, generator=g) < 0.4).float()  # observed-mask channels are 0/1
    cxr = torch.randn(B, D, generator=g)
    cxr[~present_cxr] = 0.0
    return {
        "inputs": {"ehr": ehr, "cxr": cxr},
        "present": {"ehr": torch.ones(B, dtype=torch.bool), "cxr": present_cxr.clone()},
        "labels": (torch.rand(B, n_outputs, generator=g) > 0.5).float(),
    }


SOME = torch.tensor([True, False] * (B // 2))


@pytest.mark.parametrize("method", NEW)
def test_absent_cxr_prediction_ignores_cxr_weights_present_uses_them(method):
    """Perturbing every CXR-encoder weight leaves stays without a CXR exactly unchanged and changes
    stays with one (so the CXR is really used, and really skipped when absent)."""
    torch.manual_seed(0)
    model = FUSIONS.get(method)(spec()).eval()
    b = batch(SOME)
    with torch.no_grad():
        before = model(b).logits
        for p in model.encoders["cxr"].parameters():
            p.add_(torch.randn_like(p))
        after = model(b).logits
    assert torch.equal(before[~SOME], after[~SOME])
    assert not torch.allclose(before[SOME], after[SOME])


@pytest.mark.parametrize("method", NEW)
def test_prediction_does_not_depend_on_the_rest_of_the_batch(method):
    torch.manual_seed(0)
    model = FUSIONS.get(method)(spec()).eval()
    b = batch(SOME)
    with torch.no_grad():
        full = model(b).logits
        for i in (0, 1):
            one = {"inputs": {m: x[i:i + 1] for m, x in b["inputs"].items()},
                   "present": {m: x[i:i + 1] for m, x in b["present"].items()}, "labels": b["labels"][i:i + 1]}
            torch.testing.assert_close(model(one).logits, full[i:i + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", NEW)
def test_softmax_outputs_train_with_cross_entropy(method):
    torch.manual_seed(0)
    model = FUSIONS.get(method)(spec(7, output_kind="softmax"))
    b = batch(SOME)
    logits = model(b).logits
    assert logits.shape == (B, 7)
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(B) % 7)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ---- attention ---------------------------------------------------------------------------------
def test_attention_without_cxr_equals_the_ehr_token_attending_to_itself_alone():
    torch.manual_seed(0)
    model = FUSIONS.get("attention")(spec()).eval()
    b = batch(SOME)
    with torch.no_grad():
        out = model(b).logits
        fusion = model.fusion
        ehr = model.encoders["ehr"](b["inputs"]["ehr"])
        token = (fusion.project["ehr"](ehr) + fusion.type_embedding[0])[:, None, :]  # a 1-token sequence
        alone = model.head(fusion.norm(fusion.layer(token)[:, 0]))
    torch.testing.assert_close(out[~SOME], alone[~SOME], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[SOME], alone[SOME])  # with a CXR the EHR token attends to it


def test_attention_type_embeddings_distinguish_modalities():
    """Swap the two type embeddings: the prediction of a paired stay changes (the tokens are not a bag)."""
    torch.manual_seed(0)
    model = FUSIONS.get("attention")(spec()).eval()
    b = batch(torch.ones(B, dtype=torch.bool))
    with torch.no_grad():
        before = model(b).logits
        model.fusion.type_embedding.copy_(model.fusion.type_embedding.flip(0))
        assert not torch.allclose(before, model(b).logits)


# ---- medfuse -----------------------------------------------------------------------------------
def test_medfuse_without_cxr_equals_the_lstm_over_ehr_alone():
    torch.manual_seed(0)
    model = FUSIONS.get("medfuse")(spec()).eval()
    b = batch(SOME)
    with torch.no_grad():
        out = model(b).logits
        fusion = model.fusion
        v_ehr = fusion.project["ehr"](model.encoders["ehr"](b["inputs"]["ehr"]))
        _, (h, _) = fusion.lstm(v_ehr[:, None, :])  # the sequence [EHR] of length 1
        alone = model.head(h[-1])
        v_cxr = fusion.project["cxr"](model.encoders["cxr"](b["inputs"]["cxr"]))
        _, (h2, _) = fusion.lstm(torch.stack([v_ehr, v_cxr], dim=1))  # [EHR, CXR]
        pair = model.head(h2[-1])
    torch.testing.assert_close(out[~SOME], alone[~SOME], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[SOME], pair[SOME], rtol=1e-5, atol=1e-6)


def test_medfuse_missing_token_option_is_learned_and_placeholder_free():
    torch.manual_seed(0)
    from dataclasses import replace

    model = MedFuse(replace(spec(), missing_token="learned")).eval()
    assert FUSIONS.get("medfuse")(spec()).fusion.missing_token is None  # default: skip, no token
    b = batch(SOME)
    scrambled = {**b, "inputs": {**b["inputs"], "cxr": b["inputs"]["cxr"].clone()}}
    scrambled["inputs"]["cxr"][~SOME] = float("nan")
    with torch.no_grad():
        ref = model(b).logits
        assert torch.equal(ref, model(scrambled).logits)
        model.fusion.missing_token.add_(1.0)
        moved = model(b).logits
    assert torch.equal(ref[SOME], moved[SOME]) and not torch.allclose(ref[~SOME], moved[~SOME])
    model.train()
    model(b).logits.sum().backward()
    assert model.fusion.missing_token.grad is not None and model.fusion.missing_token.grad.abs().sum() > 0


# ---- utde --------------------------------------------------------------------------------------
def test_mtand_is_a_per_variable_masked_softmax_over_observed_hours():
    torch.manual_seed(0)
    mtand = MultiTimeAttention(T, 8)
    values = torch.randn(3, T, 5)
    mask = torch.rand(3, T, 5) < 0.3
    mask[0, :, 2] = False  # a variable never observed
    with torch.no_grad():
        out = mtand(values, mask)
        phi = mtand.time_embedding(mtand.times)
        scores = mtand.query(phi) @ mtand.key(phi).T * mtand.scale
        expected = torch.zeros(3, T, 5)
        for b in range(3):
            for f in range(5):
                keys = mask[b, :, f]
                if keys.any():
                    w = torch.softmax(scores[:, keys], dim=1)
                    expected[b, :, f] = w @ values[b, keys, f]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[0, :, 2], torch.zeros(T))
    # values at unobserved hours are never read by the time-attention branch
    with torch.no_grad():
        assert torch.equal(mtand(torch.where(mask, values, torch.full_like(values, 1e6)), mask), out)


def test_utde_gate_mixes_both_branches():
    """Both the imputation branch (reads every hour) and mTAND (observed hours only) reach the output."""
    torch.manual_seed(0)
    model = FUSIONS.get("utde")(spec()).eval()
    emb = model.encoders["ehr"]
    b = batch(SOME)
    x = b["inputs"]["ehr"]
    with torch.no_grad():
        base = emb(x)
        # change values at unobserved hours only: the imputation branch sees it
        unobserved = x[..., F:] < 0.5
        x2 = x.clone()
        x2[..., :F] = torch.where(unobserved, x[..., :F] + 5.0, x[..., :F])
        assert not torch.allclose(emb(x2), base)
        # silence the imputation branch's input: the output still depends on observed values (mTAND)
        emb.imputation.weight.zero_()
        x3 = x.clone()
        x3[..., :F] = torch.where(unobserved, x[..., :F], x[..., :F] + 5.0)
        assert not torch.allclose(emb(x3), emb(x))


# ---- bilstm encoder ------------------------------------------------------------------------------
def test_bilstm_joins_last_forward_and_last_backward_states():
    torch.manual_seed(0)
    enc = build_ehr_encoder("bilstm", 2 * F, 16, 0.0).eval()
    x = torch.randn(3, T, 2 * F)
    with torch.no_grad():
        out = enc(x)
        seq, _ = enc.rnn(x)
    assert out.shape == (3, 16) and enc.out_dim == 16
    torch.testing.assert_close(out[:, :8], seq[:, -1, :8])  # forward direction after the last hour
    torch.testing.assert_close(out[:, 8:], seq[:, 0, 8:])  # backward direction after reading back to hour 1
    # the backward half reads hour 1 last, the forward half reads hour 48 last: each responds to its end
    first, last = x.clone(), x.clone()
    first[:, 0] += 1.0
    last[:, -1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(enc(first)[:, 8:], out[:, 8:]) and not torch.allclose(enc(last)[:, :8], out[:, :8])


@pytest.mark.parametrize("method", ["ehr", "early", "late", "attention", "medfuse"])
def test_methods_with_an_ehr_encoder_train_with_bilstm(method):
    torch.manual_seed(0)
    model = FUSIONS.get(method)(spec(encoder="bilstm"))
    b = batch(SOME)
    out = model(b)
    assert out.logits.shape == (B, 2) and torch.isfinite(out.logits).all()
    model.training_loss(out, b, BinaryTask()).backward()
    assert all(p.grad is not None for p in model.encoders["ehr"].parameters())


# ---- daft ----------------------------------------------------------------------------------------
def test_daft_needs_the_cxr_and_is_conditioned_on_the_ehr():
    torch.manual_seed(0)
    model = FUSIONS.get("daft")(spec()).eval()
    assert model.scorable(batch(SOME)["present"]).tolist() == SOME.tolist()
    b = batch(torch.ones(B, dtype=torch.bool))
    other_ehr = {**b, "inputs": {**b["inputs"], "ehr": batch(torch.ones(B, dtype=torch.bool), seed=5)["inputs"]["ehr"]}}
    with torch.no_grad():
        assert not torch.allclose(model(b).logits, model(other_ehr).logits)


def test_daft_identity_transform_removes_the_ehr():
    """With the bottleneck's output fixed at α = 1, β = 0 the EHR has no influence: the conditioning
    acts only through the affine transform."""
    torch.manual_seed(0)
    model = FUSIONS.get("daft")(spec()).eval()
    last = model.fusion.bottleneck[-1]
    dim = last.out_features // 2
    b = batch(torch.ones(B, dtype=torch.bool))
    other_ehr = {**b, "inputs": {**b["inputs"], "ehr": batch(torch.ones(B, dtype=torch.bool), seed=5)["inputs"]["ehr"]}}
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.cat([torch.ones(dim), torch.zeros(dim)]))
        torch.testing.assert_close(model(b).logits, model(other_ehr).logits)
