import pytest
import torch

from mmfair.core.encoders.ehr import build_ehr_encoder, sinusoidal_positions
from mmfair.core.registry import EHR_ENCODERS


def test_registered_encoders():
    assert {"lstm", "gru", "transformer"} <= set(EHR_ENCODERS.names())


@pytest.mark.parametrize("name", ["lstm", "gru", "transformer"])
def test_encoder_output_and_gradient(name):
    torch.manual_seed(0)
    enc = build_ehr_encoder(name, input_dim=10, hidden_dim=16, dropout=0.1, seq_len=48)
    x = torch.randn(3, 48, 10, requires_grad=True)
    h = enc(x)
    assert h.shape == (3, 16) and enc.out_dim == 16
    h.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["lstm", "gru", "transformer"])
def test_encoder_rows_are_independent(name):
    torch.manual_seed(0)
    enc = build_ehr_encoder(name, input_dim=6, hidden_dim=8, dropout=0.0).eval()
    x = torch.randn(4, 48, 6)
    y = x.clone()
    y[1:] = torch.randn(3, 48, 6)
    with torch.no_grad():
        torch.testing.assert_close(enc(x)[0], enc(y)[0])


def test_transformer_is_order_aware():
    torch.manual_seed(0)
    enc = build_ehr_encoder("transformer", input_dim=6, hidden_dim=8, dropout=0.0).eval()
    x = torch.randn(1, 48, 6)
    with torch.no_grad():
        assert not torch.allclose(enc(x), enc(x.flip(1)))
    assert sinusoidal_positions(48, 7).shape == (48, 7)
