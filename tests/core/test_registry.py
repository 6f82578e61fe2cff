"""Every registry opens to installed packages the same way: an entry point in its axis's group."""

from __future__ import annotations

import importlib
import sys

import pytest

from mmfair.core import registry
from mmfair.core.errors import ConfigError
from mmfair.core.study.backends import BACKENDS

PLUGIN = '''
from mmfair.core.registry import Registry
from mmfair.plugins import MODULATORS, Modulator, SCENARIOS


class Halver(Modulator):
    name = "test-halver"


MODULATORS.register("test-halver", summary="test only")(Halver)
SCENARIOS.register("test-nothing", summary="test only")(object())
'''

AXES = {"mmfair.fusions": registry.FUSIONS, "mmfair.modulators": registry.MODULATORS,
        "mmfair.scenarios": registry.SCENARIOS, "mmfair.tasks": registry.TASKS,
        "mmfair.ehr_encoders": registry.EHR_ENCODERS, "mmfair.backends": BACKENDS}


def test_each_axis_reads_its_own_entry_point_group():
    assert {group: reg.entry_point_group for group, reg in AXES.items()} == {group: group for group in AXES}


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A distribution whose module registers a modulator and a scenario, found through two groups."""
    from fake_distribution import write_distribution

    write_distribution(tmp_path, "mmfair-test-axes", "mmfair_test_axes", PLUGIN,
                       {"mmfair.modulators": "halver", "mmfair.scenarios": "nothing"})
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    import mmfair.core.modulators  # noqa: F401  (the built-ins first, so only the plugin's entries are new)

    registry.SCENARIOS.names()
    for reg in (registry.MODULATORS, registry.SCENARIOS):
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))  # the plugin's entries go with the test
        monkeypatch.setattr(reg, "_plugins_loaded", False)
    yield
    sys.modules.pop("mmfair_test_axes", None)


def test_an_installed_modulator_and_scenario_are_found_by_name(installed):
    with pytest.raises(ConfigError):
        registry.FUSIONS.get("test-halver")  # a modulator, not a fusion method
    assert registry.MODULATORS.get("test-halver").name == "test-halver"
    assert "test-nothing" in registry.SCENARIOS
