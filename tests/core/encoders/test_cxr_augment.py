"""`augment_images`: training's global-RNG path is unchanged; the prep encoder's generator path is seeded
on the CPU and leaves the global RNG alone."""

import math

import torch
import torch.nn.functional as F

from mmfair.core.encoders.cxr_images import CXRImageSpec, augment_images

SPEC = CXRImageSpec(model_name="test_resnet", image_size=16, norm_mean=0.5, norm_std=0.25, rotate=5.0)


def _reference(x, spec):
    """The formula as training used it before the generator option, written out again."""
    b = x.shape[0]
    angle = (torch.rand(b) * 2 - 1) * math.radians(spec.rotate)
    zoom = 1 + (torch.rand(b) * 2 - 1) * spec.scale
    shift = (torch.rand(b, 2) * 2 - 1) * (2 * spec.translate)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    out = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), mode="bilinear",
                        padding_mode="border", align_corners=False)
    contrast = 1 + (torch.rand(b, 1, 1, 1) * 2 - 1) * spec.jitter
    brightness = (torch.rand(b, 1, 1, 1) * 2 - 1) * spec.jitter
    return out * contrast + brightness


def test_global_rng_path_is_what_training_used():
    x = torch.randn(3, 1, 16, 16)
    torch.manual_seed(7)
    got = augment_images(x, SPEC)
    torch.manual_seed(7)
    torch.testing.assert_close(got, _reference(x, SPEC), rtol=0, atol=0)


def test_generator_path_is_seeded_and_leaves_the_global_rng_alone():
    x = torch.randn(3, 1, 16, 16)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = augment_images(x, SPEC, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    b = augment_images(x, SPEC, generator=torch.Generator().manual_seed(5))
    c = augment_images(x, SPEC, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
