"""A third-party fusion method registers through the `mmfair.fusions` entry-point group and trains."""

import importlib
import sys
from pathlib import Path

import pytest

from mmfair.core import registry
from mmfair.core.config import TrainConfig

#: the packaged example plugin (examples/plugin_method), installed here as a bare module + dist-info
PLUGIN = (Path(__file__).resolve().parents[3] / "examples" / "plugin_method" / "mmfair_plugin_mean" / "__init__.py").read_text()


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """An installed distribution (module + dist-info with an entry point) on sys.path, as pip would leave it."""
    from fake_distribution import write_distribution

    write_distribution(tmp_path, "mmfair-test-plugin", "mmfair_test_plugin", PLUGIN, {"mmfair.fusions": "plugin-mean"})
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
