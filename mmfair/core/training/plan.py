"""``mmfair train``'s grid (:class:`~mmfair.core.config.TrainPlan`) expanded into one TrainConfig per run: which
method trains each modality subset, and which static fields it reads."""

from __future__ import annotations

import itertools
from typing import Any

from mmfair.core.config import TrainConfig, TrainPlan
from mmfair.core.errors import ConfigError

MODALITY_NAMES = ("ehr", "cxr", "static")
#: Subsets trained by a unimodal method rather than the plan's fusions (the modalities that reach the model).
MODALITY_SUBSETS = {frozenset({"ehr"}): "ehr", frozenset({"cxr"}): "cxr", frozenset({"static"}): "ehr",
                    frozenset({"ehr", "static"}): "ehr"}

#: (method or None = the options' own, static fields or None = the options' own, hourly_ehr or None = default)
RunShape = tuple[str | None, tuple[str, ...] | None, bool | None]


def train_configs(plan: TrainPlan) -> list[TrainConfig]:
    """Every run of ``plan``, in the order method/subset × task × fold × seed (each validated)."""
    shapes = modality_subsets(list(plan.fusions) or [None], plan.modalities, static_choice(plan))
    points = itertools.product(shapes, plan.tasks or [None], plan.folds or [None], plan.seeds or [None])
    return [_config(plan.options, fusion=fusion, static_fields=fields, hourly_ehr=hourly, task=task, fold=fold, seed=seed)
            for (fusion, fields, hourly), task, fold, seed in points]


def _config(options: dict[str, Any], **point: Any) -> TrainConfig:
    return TrainConfig.model_validate({**options, **{k: v for k, v in point.items() if v is not None}})


def static_choice(plan: TrainPlan) -> tuple[str, ...] | None:
    """The static fields asked for by ``plan.static`` (the whitelist's defaults) and ``plan.static_fields`` on
    top of the options' own; None when neither is set."""
    if not plan.static and not plan.static_fields:
        return None
    from mmfair.core.training.static import load_whitelist

    chosen = list(plan.options.get("static_fields") or [])
    chosen += list(load_whitelist().defaults) if plan.static else []
    return tuple(dict.fromkeys(chosen + list(plan.static_fields)))


def modality_subsets(fusions: list[str | None], modalities: tuple[str, ...] | list[str],
                     static_fields: tuple[str, ...] | None) -> list[RunShape]:
    """(method, static fields, hourly_ehr) to train for each modality subset: any non-empty subset of ``ehr``,
    ``cxr``, ``static``. ``ehr``, ``static`` and ``ehr,static`` train the unimodal ``ehr`` model, ``cxr`` the
    ``cxr`` model, every subset with ``cxr`` and another modality the fusions. ``static`` in a subset switches the
    static modality on (``static_fields``, else the whitelist's defaults), its absence off; without ``ehr`` the
    hourly variables are off (``hourly_ehr=False``) and the EHR branch carries the static channels only. Without
    subsets: the fusions as asked (hourly_ehr not set)."""
    if not modalities:
        return [(f, static_fields, None) for f in fusions]
    from mmfair.core.training.static import load_whitelist

    out: list[RunShape] = []
    for value in modalities:
        subset = frozenset(part.strip() for part in value.split(",") if part.strip())
        if not subset or subset - set(MODALITY_NAMES):
            raise ConfigError(f"--modalities '{value}': expected a non-empty comma-separated subset of "
                              f"{', '.join(MODALITY_NAMES)} (e.g. ehr, cxr,static or ehr,cxr,static)")
        chosen = [MODALITY_SUBSETS[subset]] if subset in MODALITY_SUBSETS else fusions
        fields = (static_fields or load_whitelist().defaults) if "static" in subset else ()
        hourly = "ehr" in subset or subset == frozenset({"cxr"})  # cxr alone: the default, so its run id is kept
        out += [(f, fields, hourly) for f in chosen if (f, fields, hourly) not in out]
    return out
