"""Demographic-encoding probe (issue 17): how well a run's representations reveal the sensitive attributes.

For each finished run and each attribute (``gender``, ``race_group``, ``age_group``), a logistic probe
(scikit-learn; standardised features, L2, lbfgs) is fitted on the representations of the run's **training**
stays, its regularisation ``C`` is chosen from ``EvalFairConfig.probe_c_grid`` by validation-fold AUROC, and the
chosen probe is scored on the **test** fold: AUROC, macro one-vs-rest over the groups for an attribute with more
than two, with a patient-level bootstrap interval (:mod:`.bootstrap`, the same subject draws as eval-fair's
rows). The probe thus never sees a test stay, and the run's own model never saw one either (cross-fitting over
the run's folds). Encoding-probe methodology: Glocker et al., *Algorithmic encoding of protected
characteristics in chest X-ray disease detection models*, eBioMedicine 2023; Yang et al., *The limits of
fair medical imaging AI in real-world generalization*, Nat Med 2024.

Representations (``scenario_params["representation"]``):

* ``cxr``: the CXR embedding of the store (prep's frozen encoder, also in images mode), stays with a CXR;
* ``ehr``: the output of the run's EHR encoder (``encoders.ehr``, ``"source": "encoder"``); for a method
  whose EHR encoder is not called as a module on the EHR input (or a tree run) the EHR *aggregates* instead
  (``"source": "aggregates"``: per channel the 48 h mean of the scaled values and of the observation mask);
* ``fused``: :meth:`FusionModel.representation` (default: the input of the head), the stays the model scores.

A modality enters only when the run uses it. Groups with fewer than ``min_group_size`` stays in the training or
the test rows are left out of the probe (their stays too); with fewer than two groups left the row is
``defined=false``. A run whose static inputs include the attribute (``static_fields``: the attribute itself, or
``age`` for ``age_group``) carries ``"static_input": true`` in ``scenario_params``: its fused representation
holds the attribute by construction.

Rows: metric ``probe_auroc``, ``attribute`` = the probed attribute, ``group=all``, ``label=all``,
``scenario=none``, ``evaluated_on`` ``with_cxr`` for ``cxr`` and ``all`` otherwise, ``n`` the test stays scored.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from mmfair.core.config import EvalFairConfig
from mmfair.core.errors import ConfigError, MmfairError
from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.run_folder import load_run_info
from mmfair.core.evaluation.tidy import make_row, to_frame

log = logging.getLogger(__name__)

METRIC = "probe_auroc"
REPRESENTATIONS = ("cxr", "ehr", "fused")
#: Static fields that reveal an attribute besides the attribute itself.
_STATIC_SOURCES = {"age_group": ("age",)}
_BATCH = 256


@dataclass(frozen=True)
class Representation:
    """One representation of a split's stays: ``x`` [n_kept, d] for the rows where ``keep`` is True."""

    x: np.ndarray
    keep: np.ndarray
    source: str


# ---- the probe itself (arrays in, AUROC out) -----------------------------------------------------
def macro_auroc(y: np.ndarray, proba: np.ndarray, classes: Sequence[Any], weights: np.ndarray | None = None):
    """AUROC of the class scores ``proba`` [n, K] for labels ``y``: the positive class's AUROC when K = 2, else
    the unweighted mean of the K one-vs-rest AUROCs (NaN when any is undefined). ``weights`` [B, n] gives the B
    bootstrap replicates at once (:mod:`.metrics`)."""
    y = np.asarray(y)
    if len(classes) == 2:
        return M.auroc((y == classes[1]).astype(float), proba[:, 1], weights)
    per_class = [M.auroc((y == c).astype(float), proba[:, k], weights) for k, c in enumerate(classes)]
    return np.mean(np.stack([np.atleast_1d(p) for p in per_class]), axis=0) if weights is not None \
        else float(np.mean(per_class))


def _fit(x: np.ndarray, y: np.ndarray, c: float, seed: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    with warnings.catch_warnings():
        # an unconverged probe can only understate what the representation encodes; it still gives a score
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(x, y)
    return probe


def fit_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], c_grid: Sequence[float],
              seed: int = 0):
    """The logistic probe fitted on ``train`` = (x, y) with the ``C`` of ``c_grid`` whose probe has the highest
    AUROC on ``val`` (the first on ties; the first ``C`` when validation cannot rank them). Returns (probe, C)."""
    best, best_score, best_c = None, -np.inf, None
    for c in c_grid:
        probe = _fit(train[0], train[1], float(c), seed)
        kept = np.isin(val[1], probe.classes_)
        score = macro_auroc(val[1][kept], probe.predict_proba(val[0][kept]), list(probe.classes_)) if kept.any() \
            else float("nan")
        if best is None or (np.isfinite(score) and score > best_score):
            best, best_score, best_c = probe, (score if np.isfinite(score) else -np.inf), float(c)
    return best, best_c


def common_groups(y_train: np.ndarray, y_test: np.ndarray, min_group_size: int) -> list[Any]:
    """Groups with at least ``min_group_size`` stays in both the training and the test rows (sorted)."""
    train_counts = pd.Series(y_train).value_counts()
    test_counts = pd.Series(y_test).value_counts()
    return sorted(g for g in train_counts.index
                  if train_counts[g] >= min_group_size and test_counts.get(g, 0) >= min_group_size)


def probe_scores(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], weights: np.ndarray, *, c_grid: Sequence[float],
                 min_group_size: int, seed: int = 0) -> dict[str, Any]:
    """Probe AUROC on ``test`` with its bootstrap replicates (``weights`` [B, n_test] over the test rows).
    Returns ``value``, ``replicates``, ``n`` (test stays scored), ``groups`` and ``c``; value NaN with fewer than
    two groups."""
    groups = common_groups(train[1], test[1], min_group_size)
    if len(groups) < 2:
        return {"value": float("nan"), "replicates": np.full(weights.shape[0], np.nan), "n": 0, "groups": groups,
                "c": None}
    masks = [np.isin(part[1], groups) for part in (train, val, test)]
    (xtr, ytr), (xva, yva), (xte, yte) = ((part[0][m], part[1][m]) for part, m in zip((train, val, test), masks))
    probe, c = fit_probe((xtr, ytr), (xva, yva), c_grid, seed)
    proba = probe.predict_proba(xte)
    classes = list(probe.classes_)
    value = macro_auroc(yte, proba, classes)
    replicates = macro_auroc(yte, proba, classes, weights[:, masks[2]]) if weights.shape[0] else np.zeros(0)
    return {"value": float(value), "replicates": np.asarray(replicates, dtype=float), "n": int(len(yte)),
            "groups": groups, "c": c}


# ---- a run's representations ---------------------------------------------------------------------
def _ehr_encoder(model: Any) -> torch.nn.Module | None:
    encoders = getattr(model, "encoders", None)
    if isinstance(encoders, torch.nn.ModuleDict) and "ehr" in encoders:
        return encoders["ehr"]
    return None


def _ehr_aggregates(split: Any) -> np.ndarray:
    return split.inputs["ehr"].float().mean(dim=1).cpu().numpy()


@torch.no_grad()
def _model_representations(run: Any, split: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(fused [n, R], or None when the method exposes none; the EHR encoder's output [n, H], or None when the
    encoder is not called once per batch as a module returning [B, H])."""
    from mmfair.core.training.trainer import cpu_threads

    model, encoder = run.model, _ehr_encoder(run.model)
    fused: list[torch.Tensor] | None = []
    ehr: list[torch.Tensor] | None = [] if encoder is not None else None
    captured: list[Any] = []
    handle = encoder.register_forward_hook(lambda _m, _a, out: captured.append(out)) if encoder is not None else None
    try:
        with cpu_threads(run.config.threads):
            for start in range(0, len(split), _BATCH):
                batch = split.batch(slice(start, start + _BATCH))
                fused = _fused_batch(model, batch, fused, captured, run.run_id)
                n = batch["labels"].shape[0]
                if ehr is not None and len(captured) == 1 and isinstance(captured[0], torch.Tensor) \
                        and captured[0].dim() == 2 and captured[0].shape[0] == n:
                    ehr.append(captured[0].detach().float().cpu())
                else:
                    ehr = None
    finally:
        if handle is not None:
            handle.remove()
    return (None if fused is None else torch.cat(fused).numpy()), (None if ehr is None else torch.cat(ehr).numpy())


def _fused_batch(model: Any, batch: dict, fused: list[torch.Tensor] | None, captured: list, run_id: str):
    """One forward pass over ``batch`` (``captured`` refilled by the EHR encoder's hook), its fused
    representation appended to ``fused``; None from the first batch whose head has no [B, ...] input."""
    captured.clear()
    if fused is not None:
        try:
            fused.append(model.representation(batch).float().cpu())
            return fused
        except ValueError as exc:  # an unusual head: no fused probe for this method, the modalities still
            log.warning("probe: run %s: %s", run_id, exc)
            captured.clear()
    model(batch)
    return None


def _train_split(run: Any) -> Any:
    from mmfair.core.training.data import build_splits
    from mmfair.core.training.run_files import run_image_size

    splits, _ = build_splits(run.store, run.task, run.config.fold, run.device, run.scaler, names=("train",),
                             split_rule=run.config.split, train_cohort=run.config.train_cohort,
                             image_size=run_image_size(run.config, run.store))
    return splits["train"]


def representations(run: Any, split_name: str) -> tuple[np.ndarray, dict[str, Representation]]:
    """The split's cohort rows and the representations of a loaded run (:func:`mmfair.core.training.load_run`) on
    split ``train``, ``val`` or ``test``: the modalities the run uses and (neural runs) its fused representation."""
    from mmfair.core.training.run_files import run_modalities

    split = _train_split(run) if split_name == "train" else run.split(split_name)
    modalities = run_modalities(run.config)
    out: dict[str, Representation] = {}
    store, rows = run.store, split.rows
    if "cxr" in modalities and store.cxr_embeddings is not None:
        have = store.cxr_row[rows] >= 0
        out["cxr"] = Representation(store.cxr_embeddings[store.cxr_row[rows][have]].astype(np.float64), have, "store")
    encoder_out = None
    if getattr(run.model, "kind", "nn") != "estimator":
        fused, encoder_out = _model_representations(run, split)
        if fused is not None:
            scorable = run.model.scorable(split.present).cpu().numpy()
            out["fused"] = Representation(fused[scorable].astype(np.float64), scorable, "head_input")
    if "ehr" in modalities:
        every = np.ones(len(rows), dtype=bool)
        if encoder_out is not None:
            out["ehr"] = Representation(encoder_out.astype(np.float64), every, "encoder")
        else:
            out["ehr"] = Representation(_ehr_aggregates(split).astype(np.float64), every, "aggregates")
    return rows, out


def static_input(config: Any, attribute: str) -> bool:
    """Whether the run's static inputs (``static_fields``) include ``attribute`` or a field it is made from."""
    fields = set(getattr(config, "static_fields", ()) or ())
    return attribute in fields or bool(fields & set(_STATIC_SOURCES.get(attribute, ())))


def _attribute_values(cohort: pd.DataFrame, rows: np.ndarray, attribute: str) -> np.ndarray:
    values = cohort[attribute].iloc[rows]
    return values.where(values.notna(), "").astype(str).to_numpy()


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one run: the representation, the attribute, :func:`probe_scores`' output and the row's
    ``scenario_params``."""

    representation: str
    attribute: str
    scores: dict[str, Any]
    params: dict[str, Any]


def probe_run(run: Any, config: EvalFairConfig) -> list[ProbeResult]:
    """Every probe of a loaded run: each representation it has × ``config.probe_attributes``, on the test stays of
    ``config.test_cohort``, with ``config.bootstrap`` replicates (seed ``config.seed``)."""
    missing = [a for a in config.probe_attributes if a not in run.store.cohort.columns]
    if missing:
        raise ConfigError(f"probe: {run.store.path.parent / 'cohort.csv'} has no column {', '.join(missing)} "
                          "(probe_attributes)")
    splits = {name: representations(run, name) for name in ("train", "val", "test")}
    test_rows = splits["test"][0]
    in_cohort = np.ones(len(test_rows), dtype=bool)
    if config.test_cohort == "matched":
        in_cohort = run.store.cxr_row[test_rows] >= 0
    boot = PatientBootstrap(run.store.cohort["subject_id"].to_numpy()[test_rows], config.bootstrap, config.seed)
    out = []
    for representation in (r for r in REPRESENTATIONS if r in splits["test"][1]):
        for attribute in config.probe_attributes:
            data, test_mask = {}, None
            for name, (rows, reps) in splits.items():
                rep = reps[representation]
                mask = rep.keep & (in_cohort if name == "test" else True)
                mask = mask & (_attribute_values(run.store.cohort, rows, attribute) != "")
                data[name] = (rep.x[mask[rep.keep]], _attribute_values(run.store.cohort, rows[mask], attribute))
                test_mask = mask if name == "test" else test_mask
            scores = probe_scores(data["train"], data["val"], data["test"], boot.weights[:, test_mask],
                                  c_grid=config.probe_c_grid, min_group_size=config.min_group_size, seed=config.seed)
            params = {"representation": representation, "source": splits["test"][1][representation].source,
                      "static_input": static_input(run.config, attribute)}
            out.append(ProbeResult(representation, attribute, scores, params))
    return out


def evaluate_probe(run_dir: Path, config: EvalFairConfig, run: Any | None = None) -> pd.DataFrame:
    """Tidy ``probe_auroc`` rows of one finished run (see the module docstring). ``run``: the already loaded
    run (default: :func:`~mmfair.core.training.load_run` on ``config.device``)."""
    from mmfair.core.evaluation.bootstrap import percentile_ci
    from mmfair.core.training import load_run

    run_dir = Path(run_dir)
    run = run if run is not None else load_run(run_dir, device=config.device)
    info = load_run_info(run_dir, config.test_cohort)
    out = []
    for result in probe_run(run, config):
        ci = percentile_ci(result.scores["replicates"]) if config.bootstrap else None
        with_cxr = result.representation == "cxr" or config.test_cohort == "matched"
        out.append(make_row(
            **info.row_base(), attribute=result.attribute, metric=METRIC, value=result.scores["value"],
            n=result.scores["n"], evaluated_on="with_cxr" if with_cxr else "all",
            scenario_params=json.dumps(result.params, sort_keys=True),
            ci_low=ci.low if ci else None, ci_high=ci.high if ci else None))
    return to_frame(out)


def evaluate_probes(run_dirs: Sequence[Path], config: EvalFairConfig) -> pd.DataFrame:
    """:func:`evaluate_probe` of each run; a run that cannot be probed (no prepared data, a model that no longer
    loads) is warned about and left out."""
    frames = []
    for run_dir in run_dirs:
        try:
            frames.append(evaluate_probe(Path(run_dir), config))
        except MmfairError as exc:
            log.warning("probe: run %s not probed: %s", Path(run_dir).name, exc)
    return pd.concat(frames, ignore_index=True) if frames else to_frame([])
