"""Fusion methods, one module each; importing this package registers them in ``FUSIONS``."""

from mmfair.core.fusion import _early, _late, _unimodal  # noqa: F401  (registration side effects)
from mmfair.core.fusion import _attention  # noqa: F401
from mmfair.core.fusion import _medfuse  # noqa: F401
from mmfair.core.fusion import _utde  # noqa: F401
from mmfair.core.fusion import _daft  # noqa: F401
from mmfair.core.fusion._base import Batch, FusionModel, FusionSpec, Output, build_modality_encoder, keep_present

__all__ = ["Batch", "FusionModel", "FusionSpec", "Output", "build_modality_encoder", "keep_present"]
