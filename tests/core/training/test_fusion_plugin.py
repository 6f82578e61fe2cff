"""A third-party fusion method registers through the `mmfair.fusions` entry-point group and trains."""

import importlib
import sys
import textwrap

import pytest

from mmfair.core import registry
from mmfair.core.config import TrainConfig

PLUGIN = textwrap.dedent('''
    """A tiny third-party fusion: the mean of the present modalities' embeddings, then a linear head."""
    import torch
    from torch import nn

    from mmfair.core.fusion._base import FusionModel, Output, build_modality_encoder
    from mmfair.core.registry import FUSIONS


    @FUSIONS.register("plugin-mean", summary="mean of present embeddings (third-party test plugin)", paper="none")
    class MeanFusion(FusionModel):
        modalities = ("ehr", "cxr")
        handles_missing = True

        def __init__(self, spec):
            super().__init__(spec)
            self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
            self.head = nn.Linear(spec.hidden_dim, spec.n_outputs)

        def forward(self, batch):
            embeddings = {m: self.encoders[m](batch["inputs"][m]) for m in self.modalities}
            weights = torch.stack([batch["present"][m].float() for m in self.modalities], dim=1)
            stacked = torch.stack([embeddings[m] for m in self.modalities], dim=1) * weights[..., None]
            pooled = stacked.sum(dim=1) / weights.sum(dim=1, keepdim=True)
            return Output(logits=self.head(pooled), embeddings=embeddings)
''')


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """An installed distribution (module + dist-info with an entry point) on sys.path, as pip would leave it."""
    (tmp_path / "mmfair_test_plugin.py").write_text(PLUGIN)
    info = tmp_path / "mmfair_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmfair-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mmfair.fusions]\nplugin-mean = mmfair_test_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    import mmfair.core.fusion  # noqa: F401  (built-ins first, so only the plugin is new)

    monkeypatch.setattr(registry.FUSIONS, "_plugins_loaded", False)
    yield
    registry.FUSIONS._entries.pop("plugin-mean", None)
    sys.modules.pop("mmfair_test_plugin", None)


def test_entry_point_plugin_is_listed_and_trains(installed_plugin, tiny_ws):
    from mmfair.core.training import predict, load_run, train_run

    assert "plugin-mean" in registry.FUSIONS.names()
    assert registry.FUSIONS.entry("plugin-mean").summary.startswith("mean of present embeddings")
    result = train_run(TrainConfig(fusion="plugin-mean", epochs=2, patience=2, hidden_dim=16, device="cpu"), tiny_ws)
    scores = predict(load_run(result.run_dir), "test")["score"]
    assert scores.notna().all() and scores.between(0, 1).all()
