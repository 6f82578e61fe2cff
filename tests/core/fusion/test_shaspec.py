"""Properties of ``shaspec`` (ShaSpec, Wang et al. 2023) that could fail: the domain classifier reads the
specific features (not the shared ones, CareBench's defect), the L1 term counts paired stays only, and
an absent CXR is replaced by the EHR's shared feature."""

from __future__ import annotations

import pytest
import torch

import mmfair.core.fusion  # noqa: F401  (registers the methods)
from fusion_batches import one_cpu_thread, random_batch  # noqa: F401  (one_cpu_thread: autouse fixture)
from mmfair.core.fusion import FusionSpec
from mmfair.core.fusion._shaspec import ShaSpec, WeightStandardizedLinear
from mmfair.core.registry import FUSIONS

F, D, T, B = 4, 12, 48, 8
SOME = torch.tensor([True, False] * (B // 2))



def make_spec(n_outputs: int = 2) -> FusionSpec:
    return FusionSpec(n_features=F, cxr_dim=D, n_outputs=n_outputs, hidden_dim=16, dropout=0.1, seq_len=T)


def make_batch(present_cxr: torch.Tensor, n_outputs: int = 2, seed: int = 0) -> dict:
    return random_batch(present_cxr, F, D, T, n_outputs=n_outputs, seed=seed)


def test_registered_with_the_authors_default_weights():
    assert FUSIONS.get("shaspec") is ShaSpec
    params = ShaSpec.Params()
    assert (params.alpha, params.beta) == (0.1, 0.02)
    with pytest.raises(ValueError):
        ShaSpec.Params(beta=-0.1)


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_domain_classifier_trains_specific_encoders_and_never_the_shared_encoder():
    torch.manual_seed(0)
    model = ShaSpec(make_spec())
    out = model(make_batch(SOME))
    out.aux_losses["domain"].backward()
    assert _grad_norm(model.heads["domain"]) > 0
    assert _grad_norm(model.encoders["ehr"].specific) > 0
    assert _grad_norm(model.encoders["cxr"].specific) > 0
    assert _grad_norm(model.fusion["shared_encoder"]) == 0.0
    assert _grad_norm(model.encoders["ehr"].to_common) == 0.0
    assert _grad_norm(model.heads["task"]) == 0.0


def test_domain_loss_is_the_cross_entropy_of_the_specific_features():
    torch.manual_seed(0)
    model = ShaSpec(make_spec()).eval()
    batch = make_batch(SOME)
    with torch.no_grad():
        out = model(batch)
        f = model.features(batch)
        ce = torch.nn.functional.cross_entropy
        ehr_logits = model.heads["domain"](f["specific_ehr"])
        cxr_logits = model.heads["domain"](f["specific_cxr"][SOME])
        logits = torch.cat([ehr_logits, cxr_logits])
        targets = torch.cat([torch.zeros(B, dtype=torch.long), torch.ones(int(SOME.sum()), dtype=torch.long)])
        expected = model.params.beta * ce(logits, targets)
    torch.testing.assert_close(out.aux_losses["domain"], expected)


def test_l1_term_is_zero_without_pairs_and_averages_paired_stays_only():
    torch.manual_seed(0)
    model = ShaSpec(make_spec()).eval()
    none_paired = make_batch(torch.zeros(B, dtype=torch.bool))
    with torch.no_grad():
        assert model(none_paired).aux_losses["shared_l1"].item() == 0.0
        batch = make_batch(SOME)
        f = model.features(batch)
        expected = model.params.alpha * (f["shared_ehr"] - f["shared_cxr"])[SOME].abs().mean()
        got = model(batch).aux_losses["shared_l1"]
        torch.testing.assert_close(got, expected)
        assert got.item() > 0.0
        # changing an absent stay's EHR cannot change the term
        other = {**batch, "inputs": dict(batch["inputs"])}
        other["inputs"]["ehr"] = batch["inputs"]["ehr"].clone()
        other["inputs"]["ehr"][~SOME] += 3.0
        torch.testing.assert_close(model(other).aux_losses["shared_l1"], got, rtol=0, atol=0)


def test_absent_cxr_prediction_is_computed_from_the_ehr_shared_feature():
    torch.manual_seed(0)
    model = ShaSpec(make_spec()).eval()
    batch = make_batch(SOME)
    with torch.no_grad():
        logits = model(batch).logits
        ehr = model.encoders["ehr"]
        trunk = ehr.trunk(batch["inputs"]["ehr"])
        shared = model.fusion["shared_encoder"](ehr.to_common(trunk))
        specific = ehr.specific(trunk)
        composed = shared + model.fusion["compose"]["ehr"].residual(torch.cat([shared, specific], dim=1))
        by_hand = model.heads["task"]((composed + shared) / 2)
    torch.testing.assert_close(logits[~SOME], by_hand[~SOME])
    assert not torch.allclose(logits[SOME], by_hand[SOME])  # stays with a CXR use it


def test_weight_standardisation_and_shared_compositional_variant():
    layer = WeightStandardizedLinear(6, 3, bias=False)
    x = torch.eye(6)
    effective = layer(x).T  # rows = the standardised weight rows
    torch.testing.assert_close(effective.mean(dim=1), torch.zeros(3), rtol=0, atol=1e-6)
    torch.testing.assert_close(effective.var(dim=1), torch.ones(3), rtol=1e-4, atol=1e-4)
    per_modality = ShaSpec(make_spec())
    shared = ShaSpec(make_spec(), ShaSpec.Params(share_compositional_layer=True))
    assert shared.fusion["compose"]["ehr"] is shared.fusion["compose"]["cxr"]
    assert per_modality.fusion["compose"]["ehr"] is not per_modality.fusion["compose"]["cxr"]
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in per_modality.parameters())
    groups = shared.param_groups()  # the shared layer is counted once
    assert sorted(id(p) for ps in groups.values() for p in ps) == sorted(id(p) for p in shared.parameters())
