import os

import numpy as np
import pytest
import torch

from mmfair.core.data.images import load_square_uint8
from mmfair.core.encoders.cxr import CXRBackbone, build_cxr_backbone, resize_uint8, to_input
from mmfair.core.io import file_sha256
from mmfair.core.errors import ConfigError, InputFileError


def test_offline_env_is_set():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
def test_one_channel_pooled_features(name):
    torch.manual_seed(0)
    m = build_cxr_backbone(name, None, 32).eval()
    assert isinstance(m, CXRBackbone)
    with torch.no_grad():
        out = m(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, m.num_features)


def test_num_features_is_the_pooled_width_for_mobilenet():
    # MobileNetV3's pooled output is its head's hidden size (1024), not timm's num_features (576).
    m = build_cxr_backbone("mobilenetv3_small_050", None, 32).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 32, 32)).shape == (2, m.num_features)


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="not a timm model"):
        build_cxr_backbone("no_such_net_xyz", None, 32)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_one_channel_weights_roundtrip(tmp_path, fmt):
    torch.manual_seed(1)
    src = build_cxr_backbone("test_resnet", None, 32).eval()
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(src.model.state_dict(), str(path))
    else:
        torch.save(src.model.state_dict(), path)
    torch.manual_seed(2)  # a different init, overwritten by the file
    loaded = build_cxr_backbone("test_resnet", path, 32).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), src(x))
    assert len(file_sha256(path)) == 64


def test_rgb_weights_with_classifier_are_adapted_to_one_channel(tmp_path):
    import timm

    torch.manual_seed(3)
    rgb = timm.create_model("test_resnet", pretrained=False, num_classes=7).eval()
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    gray = build_cxr_backbone("test_resnet", path, 32).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        # summed RGB kernels on one channel == the RGB model on the image repeated 3 times
        expect = rgb.forward_head(rgb.forward_features(x.repeat(1, 3, 1, 1)), pre_logits=True)
        torch.testing.assert_close(gray(x), expect, rtol=1e-4, atol=1e-4)


def test_weights_of_another_model_are_refused(tmp_path):
    import timm

    other = timm.create_model("test_efficientnet", pretrained=False, num_classes=0, in_chans=1)
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(ConfigError, match="do not fit"):
        build_cxr_backbone("test_resnet", path, 32)


def test_missing_weights_file(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        build_cxr_backbone("test_resnet", tmp_path / "nope.pth", 32)


def test_real_radiographs_go_through_decode_and_backbone(real_cxr_paths):
    assert len(real_cxr_paths) == 2
    imgs = np.stack([load_square_uint8(p, 128) for p in real_cxr_paths])
    assert imgs.dtype == np.uint8 and imgs.shape == (2, 128, 128)
    assert imgs.std() > 20  # a real picture, not padding
    x = resize_uint8(torch.from_numpy(imgs), 64)
    assert x.shape == (2, 64, 64) and x.dtype == torch.uint8
    torch.manual_seed(0)
    m = build_cxr_backbone("test_resnet", None, 64).eval()
    with torch.no_grad():
        out = m(to_input(x, 0.5, 0.25))
    assert out.shape == (2, m.num_features)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])


def test_resize_uint8_keeps_same_size_and_range():
    x = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    assert resize_uint8(x, 40) is x
    y = resize_uint8(x, 20)
    assert y.shape == (3, 20, 20) and y.dtype == torch.uint8
