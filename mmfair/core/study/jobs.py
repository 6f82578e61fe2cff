"""The deterministic job list of a study: tuning units (phase 1) and final runs (phase 2).

A *unit* is one cell of the grid without its seed: method × task × fold × modality subset × train-time
missingness. Phase 1 tunes each unit on its fold's validation (``tuning.seed``'s runs); phase 2 trains the
unit's chosen configuration once per seed. Keys are hashes of the configuration, so the same study file gives
the same keys on every machine and every rerun.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmfair.core.config import TrainConfig, config_hash
from mmfair.core.study.spec import StudySpec

#: Subsets trained by a unimodal method rather than the study's fusions (as ``mmfair train --modalities``).
UNIMODAL_SUBSETS = {frozenset({"ehr"}): "ehr", frozenset({"cxr"}): "cxr", frozenset({"static"}): "ehr",
                    frozenset({"ehr", "static"}): "ehr"}


@dataclass(frozen=True)
class Unit:
    key: str
    method: str  # the method's name in the study (the fusion, or the unimodal model of a subset)
    base: TrainConfig  # seed = the tuning seed; the method's defaults
    space: dict[str, tuple] = field(default_factory=dict)
    modalities: str = ""


@dataclass(frozen=True)
class Job:
    """One unit of work for a backend: ``kind`` ``tune`` (a unit's whole search) or ``train`` (one final run)."""

    key: str
    kind: str
    method: str
    config: TrainConfig
    unit: Unit | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _subsets(spec: StudySpec) -> list[tuple[str | None, tuple[str, ...], bool, str]]:
    """(unimodal method or None = the study's fusions, static fields, hourly_ehr, label) per modality subset."""
    if not spec.modalities:
        return [(None, (), True, "")]
    from mmfair.core.training.static import load_whitelist

    out = []
    for item in spec.modalities:
        subset = frozenset(p.strip() for p in item.split(",") if p.strip())
        fields = tuple(load_whitelist().defaults) if "static" in subset else ()
        hourly = "ehr" in subset or subset == frozenset({"cxr"})
        out.append((UNIMODAL_SUBSETS.get(subset), fields, hourly, ",".join(sorted(subset))))
    return out


def _can_remove_cxr(fusion: str) -> bool:
    from mmfair.core.registry import FUSIONS

    f = FUSIONS.get(fusion)
    return "cxr" in f.modalities and len(f.modalities) > 1 and bool(f.handles_missing)


def units(spec: StudySpec) -> list[Unit]:
    from mmfair.core.study.space import study_space

    out: dict[str, Unit] = {}
    for method in spec.methods:
        for unimodal, fields, hourly, label in _subsets(spec):
            name = unimodal or method.name
            params = method.params if unimodal is None else {}
            for missing in spec.train_missing:
                if missing.removes_cxr and not _can_remove_cxr(name):
                    continue  # a method without a CXR to remove (or that cannot lose it) has no such cell
                for task in spec.tasks:
                    for fold in spec.folds:
                        base = TrainConfig(**spec.train, fusion=name, task=task, fold=fold, seed=spec.tuning.seed,
                                           fusion_params=params, modulator_params=method.modulator_params,
                                           selection_rules=spec.selection_rules, static_fields=fields, hourly_ehr=hourly,
                                           **missing.model_dump())
                        key = "u-" + config_hash(base.identity())
                        space = study_space(name, spec.tuning.generic, spec.train, params,
                                            method.modulator_params) if spec.tuning.trials else {}
                        out.setdefault(key, Unit(key, name, base, space, label))
    return list(out.values())


def tune_jobs(spec: StudySpec) -> list[Job]:
    if not spec.tuning.trials:
        return []
    return [Job("tune-" + u.key, "tune", u.method, u.base, unit=u, info=_info(u.base, u.modalities)) for u in units(spec)]


TUNED_TAG = "tuned"


def tuned_label(config: TrainConfig) -> str:
    """The method label of a unit's tuned final runs: its default label tagged ``tuned`` (``healnet[tuned]``,
    ``healnet[depth=3,tuned]``). The chosen values differ by fold, so they stay out of the label (they are in
    the study's ``tuning/<unit>/chosen.json``), and the tag keeps the runs apart from an untuned run's label."""
    from mmfair.core.training.methods import method_name

    label = method_name(config.model_copy(update={"label": None}))
    return f"{label[:-1]},{TUNED_TAG}]" if label.endswith("]") else f"{label}[{TUNED_TAG}]"


def study_label(spec: StudySpec, method: str) -> str:
    """``method`` (a study method's name or default label, e.g. an eval-fair reference) as the study's final runs
    are labelled: its tuned label when the study tunes and ``method`` is one of its units, else unchanged."""
    if not spec.tuning.trials:
        return method
    from mmfair.core.training.methods import method_name

    for u in units(spec):
        if method in (u.method, method_name(u.base)):
            return tuned_label(u.base)
    return method


def final_jobs(spec: StudySpec, chosen: dict[str, TrainConfig | None]) -> list[Job]:
    """Phase 2: each unit's chosen configuration (its base when untuned) × every seed. Units whose tuning is not
    finished (``chosen`` lacks them or holds None) have no final runs yet. Tuned runs carry the unit's
    :func:`tuned_label`, so a method keeps one label across folds whatever values each fold chose."""
    jobs = []
    for u in units(spec):
        config = chosen.get(u.key) if spec.tuning.trials else u.base
        if config is None:
            continue
        if spec.tuning.trials:
            config = config.model_copy(update={"label": tuned_label(u.base)})
        for seed in spec.seeds:
            run = config.model_copy(update={"seed": seed})
            jobs.append(Job("run-" + config_hash(run.identity()), "train", u.method, run, unit=u,
                            info=_info(run, u.modalities)))
    return jobs


def _info(config: TrainConfig, modalities: str) -> dict[str, Any]:
    return {"task": config.task, "fold": config.fold, "seed": config.seed, "modalities": modalities,
            "train_missing_rate": config.train_missing_rate, "modality_dropout": config.modality_dropout}
