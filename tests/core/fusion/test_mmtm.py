"""MMTM: gates start at 1 and stay in (0, 2); in images mode the gates act inside the CNN; a stay without a
CXR gets the ungated EHR stream's prediction whatever else is in its batch."""

from __future__ import annotations

import pytest
import torch

from fusion_batches import one_cpu_thread  # noqa: F401  (autouse fixture)
from mmfair.core.encoders.cxr_images import CXRImageSpec
from mmfair.core.fusion import FusionSpec
from mmfair.core.fusion._mmtm import MMTM, MMTMUnit

F, T, B, SIZE = 3, 12, 8, 32
IMAGE = CXRImageSpec(model_name="test_efficientnet", image_size=SIZE, norm_mean=0.45, norm_std=0.25)


def spec(images: bool) -> FusionSpec:
    return FusionSpec(n_features=F, cxr_dim=256 if images else 10, n_outputs=2, hidden_dim=8, dropout=0.0,
                      seq_len=T, cxr_image=IMAGE if images else None)


def batch(images: bool, present: torch.Tensor, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    cxr = (torch.randint(0, 256, (B, SIZE, SIZE), generator=g, dtype=torch.uint8) if images
           else torch.randn(B, 10, generator=g))
    return {"inputs": {"ehr": torch.randn(B, T, 2 * F, generator=g), "cxr": cxr},
            "present": {"ehr": torch.ones(B, dtype=torch.bool), "cxr": present}, "labels": torch.zeros(B, 2)}


SOME = torch.tensor([True, False, True, True, False, False, True, False])


def test_unit_gates_lie_in_0_2_and_start_from_identity():
    torch.manual_seed(0)
    unit = MMTMUnit(6, 4, ratio=4)
    visual, ehr = torch.randn(5, 6, 3, 3), torch.randn(5, 7, 4)
    gated_visual, gated_ehr = unit(visual, ehr)
    ratio = gated_visual / visual
    assert ((ratio > 0) & (ratio < 2)).all() and torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio))
    for layer in (unit.excite_visual, unit.excite_ehr):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    same_visual, same_ehr = unit(visual, ehr)  # 2σ(0) = 1: identity
    torch.testing.assert_close(same_visual, visual)
    torch.testing.assert_close(same_ehr, ehr)
    tokens = torch.randn(5, 9, 6)  # ViT-style [N, L, C]
    assert unit(tokens, ehr, channels_last=True)[0].shape == tokens.shape


@pytest.mark.parametrize("images", [False, True])
def test_stays_without_a_cxr_get_the_ungated_ehr_prediction(images):
    torch.manual_seed(0)
    model = MMTM(spec(images)).eval()
    mixed = batch(images, SOME)
    none = batch(images, torch.zeros(B, dtype=torch.bool))
    with torch.no_grad():
        a, b = model(mixed).logits, model(none).logits
    torch.testing.assert_close(a[~SOME], b[~SOME], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a[SOME], b[SOME])


def test_images_mode_fuses_inside_the_cnn_and_trains_every_part():
    torch.manual_seed(0)
    model = MMTM(spec(True))
    assert len(model.fusion) == 2  # the backbone's last two feature stages
    model.eval()
    b = batch(True, SOME)
    images = b["inputs"]["cxr"][SOME]
    with torch.no_grad():
        outside = model.image_encoder.features(images)  # no MMTM state: the plain backbone
        captured = {}
        # inside a forward the hooked stages are gated, so the pooled features differ from the plain ones
        model._stage_state = {"h": model.encoders["ehr"].start(b["inputs"]["ehr"]), "present": SOME, "done": 0}
        inside = model.image_encoder.features(images)
        captured["done"] = model._stage_state["done"]
        model._stage_state = None
    assert captured["done"] == 2
    assert not torch.allclose(inside, outside)
    model.train()
    out = model(b)
    out.logits.sum().backward()
    groups = model.param_groups()
    for name in ("encoder:cxr", "encoder:ehr", "fusion", "head"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups[name]), name
    backbone = {id(p) for p in model.image_encoder.parameters()}
    assert backbone <= {id(p) for p in groups["encoder:cxr"]}


def test_daft_in_images_mode_transforms_the_cnn_maps_starting_from_identity():
    from mmfair.core.fusion._daft import DAFT

    torch.manual_seed(0)
    model = DAFT(spec(True)).eval()
    b = batch(True, SOME)
    images = b["inputs"]["cxr"][SOME]
    with torch.no_grad():
        plain = model.image_encoder.features(images)
        ehr = model.encoders["ehr"](b["inputs"]["ehr"])
        model._aux = ehr[SOME]
        at_init = model.image_encoder.features(images)
        torch.nn.init.normal_(model.fusion.bottleneck[2].weight, std=0.5)
        conditioned = model.image_encoder.features(images)
        model._aux = None
    torch.testing.assert_close(at_init, plain)  # zero-initialised last layer: the pretrained backbone unchanged
    assert not torch.allclose(conditioned, plain)  # the EHR now modulates the maps inside the CNN
    model.train()
    model(b).logits[SOME].sum().backward()
    assert model.fusion.bottleneck[0].weight.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image_encoder.parameters())
