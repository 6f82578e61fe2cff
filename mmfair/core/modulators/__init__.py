"""Modulators (registry ``MODULATORS``): training strategies that change losses or gradients, composable
with any compatible fusion method (``--modulator``), and the presets that pair one with a base method
(``--fusion multifair``). The hook protocol is documented in ``_base.py``; importing this package
registers every modulator and preset.
"""

from mmfair.core.modulators import cggm, fairgrad, group_dro, multifair, ogm_ge  # noqa: F401  (registration)
from mmfair.core.modulators import aug, inforeg, pmr  # noqa: F401  (registration)
from mmfair.core.modulators._base import (
    Groups,
    Modulator,
    ModulatorParams,
    RowWeightedTask,
    build_modulator,
    group_codes,
    resolve_params,
)
from mmfair.core.modulators.presets import PRESETS, register_preset, resolve_modulator

register_preset("multifair", "early", "multifair")
register_preset("ogm-ge", "early", "ogm-ge")
register_preset("group-dro", "early", "group-dro")
register_preset("fairgrad", "early", "fairgrad")
register_preset("cggm", "early", "cggm")
register_preset("aug", "aug-base", "aug")
register_preset("inforeg", "early", "inforeg")
register_preset("pmr", "early", "pmr")

__all__ = [
    "Groups", "Modulator", "ModulatorParams", "PRESETS", "RowWeightedTask", "build_modulator", "group_codes",
    "register_preset", "resolve_modulator", "resolve_params",
]
