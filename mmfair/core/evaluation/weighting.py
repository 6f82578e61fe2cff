"""Patient-equal weighting: every patient counts once, however many ICU stays they had (tidy ``weighting=patient``).

MIMIC's cohorts hold several ICU stays of many patients; a stay-level metric lets those patients weigh more.
Here a stay's weight is ``1 / k``, ``k`` the number of its patient's stays among the evaluated stays, so each
patient's stays sum to one (as in meds-evaluation's subject-level aggregation). The metrics of
:mod:`.metrics` take any non-negative weights (a weight ``w`` is the stay repeated ``w`` times; AUROC and
AUPRC become their weighted Mann–Whitney and average-precision forms). Intervals: the same patient-level
bootstrap as every stay-level row (:class:`~.bootstrap.PatientBootstrap`, same seed, so the two weightings are
paired), each replicate's counts multiplied by the patient weights — a patient drawn ``c`` times counts ``c``.

Rows: ``auroc``, ``auprc``, ``brier`` per label (and the phenotypes' macro ``label=all``) on the same evaluated
sets as :func:`~.clean.evaluate_clean` (``evaluated_on`` ``all`` and ``with_cxr``), with ``weighting=patient``;
``n`` and ``n_pos`` count the evaluated stays as in the stay rows (the number of patients is logged). The
coverage rule is the stay rows' rule: a method that cannot score every evaluated stay is undefined there.
Length of stay is left out (its accuracy/kappa rows are stay-level only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.run_folder import load_run_info, predictions_path, read_predictions, subject_ids, task_spec
from mmfair.core.evaluation.scoring import Stat, covered, evaluated_sets, macro, natural_missing_rate, stat_row
from mmfair.core.evaluation.tidy import to_frame

log = logging.getLogger(__name__)

PATIENT = "patient"
_METRICS = {"auroc": M.auroc, "auprc": M.auprc, "brier": M.brier}


def patient_weights(subjects: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``1 / k`` for each stay in ``mask`` (``k``: its patient's stays in ``mask``), 0 outside it."""
    subjects = np.asarray(subjects)
    mask = np.asarray(mask, dtype=bool)
    w = np.zeros(subjects.size)
    codes, counts = np.unique(subjects[mask], return_inverse=True, return_counts=True)[1:]
    w[mask] = 1.0 / counts[codes]
    return w


def _score(y, s, mask, w, boot: PatientBootstrap):
    scored = mask & np.isfinite(s)
    n_eval = int(mask.sum())
    ok = covered(int(scored.sum()), n_eval)
    n_pos = int(np.nansum(y[mask]))
    out = {}
    for name, fn in _METRICS.items():
        value = float(fn(y[scored], s[scored], w[scored][None, :])[0]) if ok else float("nan")
        reps = fn(y[scored], s[scored], boot.weights[:, scored] * w[scored]) if ok and boot.n_boot \
            else np.full(boot.n_boot, np.nan)
        out[name] = Stat(value, np.asarray(reps, dtype=float), n_eval, n_pos, ok and bool(np.isfinite(value)))
    return out


def _run_rows(run_dir: Path, bootstrap: int, seed: int) -> list[dict]:
    info = load_run_info(run_dir)
    pred = read_predictions(run_dir, "test")
    source = predictions_path(run_dir, "test")
    spec = task_spec(pred, source)
    if spec.kind == "multiclass":
        log.info("%s: length of stay has no patient-weighted rows", info.run_id)
        return []
    subjects = subject_ids(pred, source)
    boot = PatientBootstrap(subjects, bootstrap, seed)
    rows: list[dict] = []
    for on, mask in evaluated_sets(pred, source).items():
        w = patient_weights(subjects, mask)
        log.debug("%s %s: %d stays of %d patients", info.run_id, on, int(mask.sum()), len(set(subjects[mask])))
        base = {**info.row_base(), "missing_rate": natural_missing_rate(pred[mask]), "evaluated_on": on,
                "weighting": PATIENT}  # fmt: skip
        per_label = []
        for label, label_col, score_col in spec.targets:
            stats = _score(pred[label_col].to_numpy(dtype=float), pred[score_col].to_numpy(dtype=float), mask, w, boot)
            per_label.append(stats)
            rows += [stat_row(base, boot, name, stat, label=label) for name, stat in stats.items()]
        if spec.kind == "multilabel":
            labels = [t[0] for t in spec.targets]
            means = macro(per_label, labels, tuple(_METRICS), boot.n_boot)
            rows += [stat_row(base, boot, name, stat, label="all") for name, stat in means.items()]
    return rows


def evaluate_clean_patient(run_dirs: Sequence[Path], *, bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Patient-weighted clean test metrics of each run (see the module docstring); tidy rows, ``weighting=patient``."""
    rows: list[dict] = []
    for run_dir in run_dirs:
        rows += _run_rows(Path(run_dir), bootstrap, seed)
    return to_frame(rows)
