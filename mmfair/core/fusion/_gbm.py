"""Gradient-boosted-tree baselines: ``gbm-ehr``, ``gbm-early``, ``gbm-late`` (estimators, not nn.Modules).

The question they answer: *does deep fusion beat a tree on the same features?* Trees on windowed
aggregates of the EHR are the strong tabular baseline of MEDS-Tab (Oufattole et al., "MEDS-Tab: automated
tabularization and baseline methods for MEDS datasets", arXiv 2411.00200, 2024) and of the mimic3-benchmark
(Harutyunyan et al., Sci. Data 2019: per-variable statistics over sub-windows of the first 48 h, there with
logistic regression); the booster is LightGBM (Ke et al., NeurIPS 2017).

Features (:func:`window_features`), computed from the RAW hourly values of ``features.h5`` with NaN kept
(no forward fill, no median fill, no scaling): per variable and per trailing window of the 48 h
(``windows``, default the whole 48 h and the last 24, 12 and 6 h): the last observed value, min, max,
mean and the number of hours with an observation. A window without an observation has NaN statistics
and count 0; a stay whose EHR is removed (``eval-missing --modality ehr``) has every EHR feature NaN,
count included.

* ``gbm-ehr``: one booster on the EHR aggregates.
* ``gbm-early``: one booster on the EHR aggregates concatenated with the prep encoder's cached CXR
  embedding (unscaled: trees do not need it); an absent CXR is NaN in every embedding column, which
  LightGBM routes down each split's learned missing-value branch — absence handled natively, never a
  zeros vector or an imputed image.
* ``gbm-late``: an EHR booster (every training stay) and a CXR booster (the training stays with a CXR),
  their probabilities averaged where the CXR is present, the EHR booster's alone where it is absent (as
  ``late``).

Training: one booster per label (phenotypes: 25; binary tasks: one), LightGBM's multiclass objective for
length of stay; early stopping on the **validation fold only** (validation AUPRC — the criterion every
neural method's checkpoint choice uses — or multi-class log loss for length of stay), at most
``n_estimators`` rounds. Deterministic: ``deterministic=True``, ``force_row_wise``, a fixed
``num_threads`` and ``seed`` = the run's seed, so a run is reproducible bit for bit on one machine.

Deviations: no hyperparameter search (LightGBM's defaults with ``learning_rate=0.05``,
``num_leaves=31``, ``min_child_samples=20``, ``subsample``/``colsample`` 0.8), as the neural methods are
untuned too until the study runner tunes all methods under one budget; length of stay stops on log loss,
not the linear kappa the neural methods select on; ``class_weights``, modulators, selection rules, the
static modality, images mode and train-time CXR removal are refused (they are properties of the neural
training loop); ``n_params`` in the cost table counts the boosters' split thresholds and leaf values.
A label with one class in the training rows gets a constant probability (its training prevalence).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from mmfair.core.fusion._base import FusionParams
from mmfair.core.registry import FUSIONS

log = logging.getLogger(__name__)

STATS = ("last", "min", "max", "mean", "count")


class GBMParams(FusionParams):
    """LightGBM's settings of the tree baselines (each enters the run id)."""

    windows: tuple[int, ...] = Field((48, 24, 12, 6), description="trailing windows (hours) of the aggregates")
    n_estimators: int = Field(1000, gt=0, description="most boosting rounds (early stopping on validation)")
    early_stopping_rounds: int = Field(50, gt=0)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, gt=1)
    min_child_samples: int = Field(20, gt=0)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(0.0, ge=0)
    num_threads: int = Field(1, gt=0, description="fixed, so that results do not depend on the machine's cores")


@dataclass
class EstimatorSpec:
    """What an estimator is built from: the task's outputs and the store's shapes."""

    n_outputs: int
    output_kind: str  # "sigmoid" (binary/multilabel) or "softmax" (multiclass)
    feature_names: tuple[str, ...]
    cxr_dim: int
    seed: int = 0


@dataclass
class FoldArrays:
    """One split as arrays: RAW hourly values (NaN = unobserved), the cached CXR embeddings (rows of absent
    images are ignored), presence flags and labels ([N, L] 0/1, or [N] class indices for softmax)."""

    ehr: np.ndarray  # float32 [N, T, F]
    cxr: np.ndarray | None  # float32 [N, D]
    present_ehr: np.ndarray  # bool [N]
    present_cxr: np.ndarray  # bool [N]
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.ehr.shape[0])


def window_features(values: np.ndarray, windows: tuple[int, ...]) -> np.ndarray:
    """``[N, F · len(STATS) · len(windows)]`` aggregates of raw ``values`` [N, T, F] (see the module docstring),
    ordered window, statistic, variable (:func:`feature_names`). NaN-safe without warnings."""
    n, t, f = values.shape
    out = []
    for w in windows:
        v = values[:, t - min(w, t):, :].astype(np.float64)
        obs = np.isfinite(v)
        count = obs.sum(axis=1)
        has = count > 0
        nan = np.full((n, f), np.nan)
        last_idx = v.shape[1] - 1 - np.argmax(obs[:, ::-1, :], axis=1)
        last = np.take_along_axis(v, last_idx[:, None, :], axis=1)[:, 0, :]
        mean = np.where(obs, v, 0.0).sum(axis=1) / np.maximum(count, 1)
        lo, hi = np.where(obs, v, np.inf).min(axis=1), np.where(obs, v, -np.inf).max(axis=1)
        out += [np.where(has, x, nan) for x in (last, lo, hi, mean)] + [count.astype(np.float64)]
    return np.concatenate(out, axis=1) if out else np.zeros((n, 0))


def feature_names(variables: tuple[str, ...], windows: tuple[int, ...]) -> list[str]:
    return [f"{var}_{stat}_{w}h" for w in windows for stat in STATS for var in variables]


class _Booster:
    """One label's (or the multiclass task's) booster, or a constant where training had one class."""

    def __init__(self, text: str | None = None, constant: list[float] | None = None) -> None:
        import lightgbm as lgb

        self.text, self.constant = text, constant
        self.model = lgb.Booster(model_str=text) if text is not None else None

    def predict(self, x: np.ndarray, n_classes: int) -> np.ndarray:
        if self.model is None:
            return np.tile(np.asarray(self.constant, dtype=float), (x.shape[0], 1))
        p = np.asarray(self.model.predict(x), dtype=float)
        return p.reshape(x.shape[0], n_classes if n_classes > 1 else 1)

    def size(self) -> int:
        """Split thresholds + leaf values of every tree (the cost table's ``n_params``)."""
        if self.model is None:
            return len(self.constant or [])
        trees = self.model.dump_model()["tree_info"]
        return int(sum(2 * t["num_leaves"] - 1 for t in trees))

    def state(self) -> dict[str, Any]:
        return {"text": self.text, "constant": self.constant}


def _lgb_params(p: GBMParams, seed: int, objective: str, n_classes: int) -> dict[str, Any]:
    params = {
        "objective": objective, "learning_rate": p.learning_rate, "num_leaves": p.num_leaves,
        "min_child_samples": p.min_child_samples, "subsample": p.subsample, "subsample_freq": 1 if p.subsample < 1 else 0,
        "colsample_bytree": p.colsample_bytree, "reg_lambda": p.reg_lambda, "num_threads": p.num_threads,
        "seed": seed, "deterministic": True, "force_row_wise": True, "verbose": -1,
        "metric": "multi_logloss" if objective == "multiclass" else "average_precision",
    }  # fmt: skip
    if objective == "multiclass":
        params["num_class"] = n_classes
    return params


def fit_booster(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, p: GBMParams, seed: int,
                n_classes: int = 1) -> tuple[_Booster, dict[str, Any]]:  # fmt: skip
    """One booster, early-stopped on the validation rows (``n_classes > 1``: multiclass, ``y`` class indices)."""
    import lightgbm as lgb

    start = time.perf_counter()
    classes = np.unique(y)
    if classes.size < 2:  # nothing to learn: the training prevalence (per class for multiclass)
        const = np.bincount(y.astype(int), minlength=n_classes) / len(y) if n_classes > 1 else [float(y.mean())]
        return _Booster(constant=[float(c) for c in const]), {"best_iteration": 0, "seconds": 0.0}
    objective = "multiclass" if n_classes > 1 else "binary"
    params = _lgb_params(p, seed, objective, n_classes)
    train = lgb.Dataset(x, y, params={"verbose": -1}, free_raw_data=True)
    can_stop = np.unique(yv).size >= 2
    callbacks = [lgb.early_stopping(p.early_stopping_rounds, first_metric_only=True, verbose=False)] if can_stop else []
    valid = [lgb.Dataset(xv, yv, reference=train)] if can_stop else []
    booster = lgb.train(params, train, num_boost_round=p.n_estimators, valid_sets=valid, callbacks=callbacks)
    best = booster.best_iteration if can_stop and booster.best_iteration > 0 else booster.current_iteration()
    text = booster.model_to_string(num_iteration=best)
    score = booster.best_score["valid_0"][params["metric"]] if can_stop else float("nan")
    return _Booster(text=text), {"best_iteration": int(best), f"val_{params['metric']}": float(score),
                                 "seconds": time.perf_counter() - start}  # fmt: skip


class GBMEstimator:
    """The estimator contract (DESIGN §5, estimators): ``fit(train, val) -> history``, ``predict_proba(arrays)``,
    ``scorable``, ``state()``/``from_state`` and ``size()``. Subclasses say which feature blocks each booster
    reads (``blocks``: booster name → ``("ehr",)``, ``("cxr",)`` or ``("ehr", "cxr")``)."""

    kind: ClassVar[str] = "estimator"
    Params: ClassVar[type[GBMParams]] = GBMParams
    handles_missing: ClassVar[bool] = True
    modalities: ClassVar[tuple[str, ...]] = ("ehr",)
    blocks: ClassVar[dict[str, tuple[str, ...]]] = {"main": ("ehr",)}
    #: ``mmfair study``: the booster's own space (it has no lr / hidden_dim / dropout of a network)
    tunes_generic: ClassVar[bool] = False
    search_space: ClassVar[dict[str, tuple]] = {
        "learning_rate": ("log", 0.01, 0.2),
        "num_leaves": ("int", 7, 127),
        "min_child_samples": ("int", 5, 100),
        "subsample": ("float", 0.5, 1.0),
        "colsample_bytree": ("float", 0.5, 1.0),
        "reg_lambda": ("float", 0.0, 10.0),
    }

    def __init__(self, spec: EstimatorSpec, params: GBMParams | None = None) -> None:
        self.spec, self.params = spec, params or GBMParams()
        self.boosters: dict[str, list[_Booster]] = {}

    # ---- features ---------------------------------------------------------------------------
    def features(self, arrays: FoldArrays, block: tuple[str, ...]) -> np.ndarray:
        parts = []
        if "ehr" in block:
            ehr = window_features(arrays.ehr, self.params.windows)
            ehr[~arrays.present_ehr] = np.nan
            parts.append(ehr)
        if "cxr" in block:
            cxr = np.full((len(arrays), self.spec.cxr_dim), np.nan)
            if arrays.cxr is not None:
                cxr[arrays.present_cxr] = arrays.cxr[arrays.present_cxr]  # absent rows stay NaN, whatever they hold
            parts.append(cxr)
        return np.concatenate(parts, axis=1)

    def _rows(self, arrays: FoldArrays, block: tuple[str, ...]) -> np.ndarray:
        """The stays a booster of ``block`` trains on: those with every modality of a one-modality block."""
        return arrays.present_cxr.copy() if block == ("cxr",) else np.ones(len(arrays), dtype=bool)

    @property
    def _n_classes(self) -> int:
        return self.spec.n_outputs if self.spec.output_kind == "softmax" else 1

    # ---- the contract -----------------------------------------------------------------------
    def fit(self, train: FoldArrays, val: FoldArrays) -> pd.DataFrame:
        history = []
        for name, block in self.blocks.items():
            rt, rv = self._rows(train, block), self._rows(val, block)
            x, xv = self.features(train, block)[rt], self.features(val, block)[rv]
            targets = [None] if self._n_classes > 1 else range(self.spec.n_outputs)
            self.boosters[name] = []
            for j in targets:
                y = train.labels[rt] if j is None else train.labels[rt, j]
                yv = val.labels[rv] if j is None else val.labels[rv, j]
                booster, info = fit_booster(x, y, xv, yv, self.params, self.spec.seed, self._n_classes)
                self.boosters[name].append(_Booster(booster.text, booster.constant))  # predict from the saved text
                history.append({"booster": name, "output": "all" if j is None else int(j), **info})
        frame = pd.DataFrame(history)
        frame["peak_memory_mb"] = np.nan
        return frame

    def _proba(self, name: str, x: np.ndarray) -> np.ndarray:
        parts = [b.predict(x, self._n_classes) for b in self.boosters[name]]
        return np.concatenate(parts, axis=1)

    def predict_proba(self, arrays: FoldArrays) -> np.ndarray:
        """``[N, n_outputs]`` probabilities; NaN for the stays the method cannot score."""
        (name, block), = self.blocks.items()
        p = self._proba(name, self.features(arrays, block))
        p[~self.scorable(arrays.present_ehr, arrays.present_cxr)] = np.nan
        return p

    def scorable(self, present_ehr: np.ndarray, present_cxr: np.ndarray) -> np.ndarray:
        flags = [present_ehr if m == "ehr" else present_cxr for m in self.modalities]
        return np.logical_or.reduce(flags)

    def size(self) -> int:
        return int(sum(b.size() for bs in self.boosters.values() for b in bs))

    def state(self) -> dict[str, Any]:
        return {name: [b.state() for b in bs] for name, bs in self.boosters.items()}

    @classmethod
    def from_state(cls, spec: EstimatorSpec, params: GBMParams, state: dict[str, Any]) -> "GBMEstimator":
        est = cls(spec, params)
        est.boosters = {name: [_Booster(s["text"], s["constant"]) for s in bs] for name, bs in state.items()}
        return est


_PAPER = "Ke et al. 2017 (LightGBM); MEDS-Tab (Oufattole et al. 2024) windowed aggregates"


@FUSIONS.register("gbm-ehr", summary="gradient-boosted trees (LightGBM) on windowed EHR aggregates", paper=_PAPER,
                  kind="estimator")
class GBMEHR(GBMEstimator):
    modalities = ("ehr",)
    blocks = {"ehr": ("ehr",)}


@FUSIONS.register("gbm-early", summary="LightGBM on EHR aggregates ‖ CXR embedding (absent CXR = NaN)",
                  paper=_PAPER, kind="estimator")
class GBMEarly(GBMEstimator):
    modalities = ("ehr", "cxr")
    blocks = {"early": ("ehr", "cxr")}


@FUSIONS.register("gbm-late", summary="mean probability of an EHR tree and a CXR tree (EHR alone without a CXR)",
                  paper=_PAPER, kind="estimator")
class GBMLate(GBMEstimator):
    modalities = ("ehr", "cxr")
    blocks = {"ehr": ("ehr",), "cxr": ("cxr",)}

    def predict_proba(self, arrays: FoldArrays) -> np.ndarray:
        p_ehr = self._proba("ehr", self.features(arrays, ("ehr",)))
        p_cxr = self._proba("cxr", self.features(arrays, ("cxr",)))
        both = (arrays.present_ehr & arrays.present_cxr)[:, None]
        p = np.where(both, (p_ehr + p_cxr) / 2, np.where(arrays.present_cxr[:, None], p_cxr, p_ehr))
        p[~self.scorable(arrays.present_ehr, arrays.present_cxr)] = np.nan
        return p
