"""Fusion methods, one private module each (``_<name>.py``); importing this package imports every such
module, which registers its methods in ``FUSIONS``. A new built-in method is a new module, nothing else."""

import importlib
import pkgutil

from mmfair.core.fusion._base import (
    Batch,
    FusionModel,
    FusionParams,
    FusionSpec,
    Output,
    build_modality_encoder,
    keep_present,
)
from mmfair.core.fusion._aug import AUGNet, AUGParams  # the boosting architecture the ``aug`` modulator drives

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name.startswith("_") and _module.name != "_base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["AUGNet", "AUGParams", "Batch", "FusionModel", "FusionParams", "FusionSpec", "Output", "build_modality_encoder", "keep_present"]
