"""The plugin's contract with mmfair (run after `pip install examples/plugin_method`): found through the
`mmfair.fusions` entry point, one logit per output, and an absent modality's input changes nothing."""

import torch

from mmfair.core import registry
from mmfair.core.fusion._base import FusionSpec

B, T, F, D = 6, 8, 3, 10


def _model():
    torch.manual_seed(0)
    spec = FusionSpec(n_features=F, cxr_dim=D, n_outputs=1, hidden_dim=16, dropout=0.0, seq_len=T)
    return registry.FUSIONS.get("plugin-mean")(spec).eval()


def _batch(present):
    g = torch.Generator().manual_seed(1)
    return {"inputs": {"ehr": torch.randn(B, T, 2 * F, generator=g), "cxr": torch.randn(B, D, generator=g)},
            "present": {"ehr": torch.ones(B, dtype=torch.bool), "cxr": present}}


def test_registered_through_the_entry_point():
    assert "plugin-mean" in registry.FUSIONS.names()
    assert registry.FUSIONS.entry("plugin-mean").summary.startswith("mean of present embeddings")


def test_one_logit_per_output():
    out = _model()(_batch(torch.ones(B, dtype=torch.bool)))
    assert out.logits.shape == (B, 1) and torch.isfinite(out.logits).all()


def test_an_absent_cxr_is_ignored():
    model, absent = _model(), torch.zeros(B, dtype=torch.bool)
    batch = _batch(absent)
    with torch.no_grad():
        before = model(batch).logits
        batch["inputs"]["cxr"] = batch["inputs"]["cxr"] * 100 + 7
        assert torch.equal(before, model(batch).logits)
