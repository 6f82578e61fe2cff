"""The public plugin API: every name a third-party fusion method, modulator or missingness scenario imports.

Internal modules may move between releases; these names do not. An installed plugin package registers the
same way on every axis: an entry point in the axis's group names a module that registers its entries when
imported — ``mmfair.fusions``, ``mmfair.modulators``, ``mmfair.scenarios``, ``mmfair.tasks``,
``mmfair.ehr_encoders`` or ``mmfair.backends`` (``[project.entry-points."mmfair.fusions"]``, see
``examples/plugin_method``); mmfair imports them on the first lookup in that registry. In a script or a test,
importing the module before the command runs does the same. Each extension axis is one registry:

- a fusion method: a :class:`FusionModel` subclass with a nested ``Params`` (:class:`FusionParams`),
  registered with ``@FUSIONS.register("name", summary=..., paper=...)``;
- a modulator: a :class:`Modulator` subclass registered in ``MODULATORS``, optionally paired with a base
  method under its own method name by :func:`register_preset`;
- a missingness scenario: a :class:`Scenario` subclass registered in ``SCENARIOS``; ``eval-missing
  --mechanism NAME`` then runs it (its ``points`` give the grid, its ``apply`` one draw's masks).
"""

from mmfair.core.evaluation.scenarios import Removal, Scenario, ScenarioPoint, StayContext, stratified_removal
from mmfair.core.fusion._base import FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder, keep_present
from mmfair.core.modulators import Modulator, ModulatorParams, register_preset
from mmfair.core.registry import EHR_ENCODERS, FUSIONS, MODULATORS, SCENARIOS, TASKS, Entry, Registry

__all__ = [
    "EHR_ENCODERS", "FUSIONS", "MODULATORS", "SCENARIOS", "TASKS", "Entry", "FusionModel", "FusionParams",
    "FusionSpec", "Modulator", "ModulatorParams", "Output", "Registry", "Removal", "Scenario", "ScenarioPoint",
    "StayContext", "build_modality_encoder", "keep_present", "register_preset", "stratified_removal",
]
