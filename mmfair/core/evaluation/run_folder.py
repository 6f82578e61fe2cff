"""Reading a run folder (DESIGN §3.3) for evaluation: metadata, predictions, thresholds, history.

The evaluation core reads files only; it never loads a model (``predict_fn`` does that for the
missing-modality scenario).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmfair.core.errors import InputFileError
from mmfair.core.evaluation.thresholds import choose_threshold

log = logging.getLogger(__name__)

_MISSING_FILE = "{0}: file not found (is this a finished run folder?)"
_BAD_JSON = "{0}: not valid JSON: {1}"
_MISSING_COLUMN = "{0}: column '{1}' is missing"
_NO_TASK_COLUMNS = "{0}: no score columns: expected 'label'+'score', 'label_<slug>'+'score_<slug>' or 'label'+'score_0'…"
_BAD_LABEL = "{0}: column '{1}' must hold 0/1 labels, found {2}"
_NO_THRESHOLD = "{0}: no threshold for rule '{1}' and label '{2}', and no validation predictions to choose one"
_NAN_THRESHOLD = "{0}: the '{1}' threshold for label '{2}' is undefined (validation had one class)"
_MISALIGNED = "predict_fn returned {0} rows for {1} ({2}); expected the {3} rows of {4} in the same stay order"

_SELECTION_FILE = re.compile(r"^predictions_test_([a-z][a-z0-9_]*)\.csv$")
_PHENO = re.compile(r"^score_(?!\d+$)(.+)$")
_CLASS = re.compile(r"^score_(\d+)$")


@dataclass(frozen=True)
class RunInfo:
    """What a tidy row needs to know about a run, from ``config.json``."""

    run_dir: Path
    run_id: str
    method: str
    modalities: str
    task: str
    fold: int | None
    seed: int | None
    train_cohort: str
    test_cohort: str
    train_missing_rate: float | None
    selection: str
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    split: str = "random"
    train_missing: str = "none"

    def row_base(self) -> dict[str, object]:
        return {
            "run_id": self.run_id, "method": self.method, "modalities": self.modalities, "task": self.task,
            "fold": self.fold, "seed": self.seed, "train_cohort": self.train_cohort,
            "test_cohort": self.test_cohort, "split": self.split, "train_missing_rate": self.train_missing_rate,
            "train_missing": self.train_missing, "selection": self.selection,
        }  # fmt: skip


@dataclass(frozen=True)
class TaskSpec:
    """How to read the label and score columns of a predictions file.

    ``kind`` is ``binary`` (one ``label``/``score``), ``multilabel`` (phenotypes: ``label_<slug>``/
    ``score_<slug>``) or ``multiclass`` (``label`` and ``score_0``…``score_{K-1}``). ``targets`` lists
    ``(label_name, label_column, score_column)`` for the first two kinds.
    """

    kind: str
    targets: tuple[tuple[str, str, str], ...] = ()
    class_columns: tuple[str, ...] = ()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputFileError(_MISSING_FILE.format(path))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputFileError(_BAD_JSON.format(path, exc)) from None


def _opt_int(v: Any) -> int | None:
    return None if v is None or v == "" else int(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None or v == "" else float(v)


#: Test cohorts of ``--test-cohort``: every test stay, or only those with a CXR (the paired cohort).
TEST_COHORTS = ("full", "matched")


def train_missing_text(modality_dropout: Any, train_missing_rate: Any) -> str:
    """The ``train_missing`` column: missingness induced at training, from ``config.json``.

    ``modality_dropout`` (a probability, default 0) and ``train_missing_rate`` (a share of training stays
    whose CXR is removed, default null) give ``dropout=0.3``, ``rate=0.5``, both joined by ``+``, or
    ``none`` when neither is set (zero counts as not set).

    >>> train_missing_text(0.3, None), train_missing_text(None, 0.5), train_missing_text(0, 0)
    ('dropout=0.3', 'rate=0.5', 'none')
    """
    parts = []
    dropout = _opt_float(modality_dropout) or 0.0
    rate = _opt_float(train_missing_rate)
    if dropout > 0:
        parts.append(f"dropout={dropout:g}")
    if rate:
        parts.append(f"rate={rate:g}")
    return "+".join(parts) or "none"


def cohort_mask(pred: pd.DataFrame, test_cohort: str, source: object = "predictions") -> np.ndarray:
    """Stays of ``test_cohort``: all (``full``) or those with a CXR (``matched``, from ``present_cxr``)."""
    if test_cohort == "full":
        return np.ones(len(pred), dtype=bool)
    if test_cohort == "matched":
        return presence(pred, "cxr", source)
    raise ValueError(f"unknown test cohort '{test_cohort}'; use one of {', '.join(TEST_COHORTS)}")


def load_run_info(run_dir: Path, test_cohort: str | None = None) -> RunInfo:
    """Read ``config.json``; missing optional keys become empty fields, ``run_id`` defaults to the folder name.

    ``train_cohort`` (``full``/``matched``) and ``split`` (``random``/``temporal``) default to ``full`` and
    ``random`` for runs written before those settings existed; ``test_cohort`` is the evaluation's own
    choice when given (it is not a property of the run), else ``config.json``'s, else ``full``.
    ``train_missing`` comes from ``modality_dropout`` and the requested ``train_missing_rate``;
    ``train_missing_rate`` (the tidy column) is the observed share of training stays without a CXR.
    """
    run_dir = Path(run_dir)
    cfg = _read_json(run_dir / "config.json")
    # Runs written before training could remove CXRs on purpose stored the *observed* share of training stays
    # without a CXR as "train_missing_rate"; newer runs store that as "train_cxr_missing_share" and use
    # "train_missing_rate" for the share removed on request. The tidy column train_missing_rate stays the
    # observed share; train_missing describes what was requested.
    if "train_cxr_missing_share" in cfg:
        observed_share, requested_rate = cfg.get("train_cxr_missing_share"), cfg.get("train_missing_rate")
    else:
        observed_share, requested_rate = cfg.get("train_missing_rate"), None
    modalities = cfg.get("modalities") or []
    if isinstance(modalities, str):
        modalities = [modalities]
    return RunInfo(
        run_dir=run_dir,
        run_id=str(cfg.get("run_id") or run_dir.name),
        method=str(cfg.get("method") or cfg.get("fusion") or ""),
        modalities="+".join(str(m) for m in modalities),
        task=str(cfg.get("task") or ""),
        fold=_opt_int(cfg.get("fold")),
        seed=_opt_int(cfg.get("seed")),
        train_cohort=str(cfg.get("train_cohort") or "full"),
        test_cohort=str(test_cohort or cfg.get("test_cohort") or "full"),
        train_missing_rate=_opt_float(observed_share),
        selection=str(cfg.get("selection") or "overall"),
        config=cfg,
        split=str(cfg.get("split") or "random"),
        train_missing=train_missing_text(cfg.get("modality_dropout"), requested_rate),
    )


def predictions_path(run_dir: Path, split: str, selection: str | None = None) -> Path:
    """``predictions_<split>.csv``, or ``predictions_<split>_<selection>.csv`` for another selection rule."""
    suffix = f"_{selection}" if selection else ""
    return Path(run_dir) / f"predictions_{split}{suffix}.csv"


def selection_rules(run_dir: Path) -> list[str]:
    """The other selection rules of a run: every ``<rule>`` with a ``predictions_test_<rule>.csv``, sorted."""
    found = (_SELECTION_FILE.match(p.name) for p in Path(run_dir).glob("predictions_test_*.csv"))
    return sorted(m.group(1) for m in found if m)


def read_predictions(run_dir: Path, split: str, selection: str | None = None) -> pd.DataFrame:
    """Read ``predictions_<split>[_<selection>].csv``; an empty score field becomes NaN (the stay is not scorable)."""
    path = predictions_path(run_dir, split, selection)
    if not path.exists():
        raise InputFileError(_MISSING_FILE.format(path))
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], low_memory=False)
    if "stay_id" not in df.columns:
        raise InputFileError(_MISSING_COLUMN.format(path, "stay_id"))
    return df


def task_spec(pred: pd.DataFrame, source: object = "predictions") -> TaskSpec:
    """Infer the task kind from the column names and check the label columns hold 0/1."""
    cols = list(pred.columns)
    class_cols = [c for c in cols if _CLASS.match(c)]
    if "label" in cols and "score" in cols:
        spec = TaskSpec("binary", targets=(("all", "label", "score"),))
    elif "label" in cols and class_cols:
        class_cols.sort(key=lambda c: int(_CLASS.match(c).group(1)))  # type: ignore[union-attr]
        return TaskSpec("multiclass", class_columns=tuple(class_cols))
    else:
        targets = []
        for c in cols:
            m = _PHENO.match(c)
            if m and f"label_{m.group(1)}" in cols:
                targets.append((m.group(1), f"label_{m.group(1)}", c))
        if not targets:
            raise InputFileError(_NO_TASK_COLUMNS.format(source))
        spec = TaskSpec("multilabel", targets=tuple(targets))
    for _, label_col, _ in spec.targets:
        values = pd.to_numeric(pred[label_col], errors="coerce")
        bad = sorted(set(pred[label_col][~values.isin([0, 1])].astype(str)))
        if bad:
            raise InputFileError(_BAD_LABEL.format(source, label_col, bad[:5]))
    return spec


def subject_ids(pred: pd.DataFrame, source: object = "predictions") -> np.ndarray:
    """The unit of the bootstrap. Without ``subject_id`` each stay is its own unit (logged)."""
    if "subject_id" in pred.columns:
        return pred["subject_id"].to_numpy()
    log.warning("%s has no subject_id column: bootstrapping stays, not patients", source)
    return pred["stay_id"].to_numpy()


def presence(pred: pd.DataFrame, modality: str, source: object = "predictions", required: bool = True) -> np.ndarray:
    """``present_<modality>`` as bool; all True when absent and not required."""
    col = f"present_{modality}"
    if col not in pred.columns:
        if required:
            raise InputFileError(_MISSING_COLUMN.format(source, col))
        return np.ones(len(pred), dtype=bool)
    return pd.to_numeric(pred[col], errors="coerce").fillna(0).to_numpy() > 0


def thresholds_for(run_dir: Path, spec: TaskSpec, rule: str, selection: str | None = None) -> dict[str, float]:
    """Per-label thresholds of ``rule``, chosen on validation.

    Read from ``threshold.json`` (``{rule: {label: t}}``). Where the file lacks the rule or a label,
    the threshold is chosen with :func:`choose_threshold` on ``predictions_val.csv`` — validation
    again; test predictions are never looked at. For another checkpoint ``selection`` (``threshold.json``
    holds the default checkpoint's thresholds) every threshold is chosen on that rule's own
    ``predictions_val_<selection>.csv``.
    """
    run_dir = Path(run_dir)
    path = run_dir / "threshold.json"
    stored = _read_json(path).get(rule, {}) if path.exists() and not selection else {}
    out: dict[str, float] = {}
    val = None
    for label, label_col, score_col in spec.targets:
        if label in stored:
            t = float(stored[label])
        else:
            if val is None:
                vpath = predictions_path(run_dir, "val", selection)
                if not vpath.exists():
                    raise InputFileError(_NO_THRESHOLD.format(path, rule, label))
                val = read_predictions(run_dir, "val", selection)
                log.info("%s: rule '%s' not stored; choosing it on %s", path, rule, vpath)
            t = choose_threshold(val[label_col].to_numpy(), val[score_col].to_numpy(), rule)
        if not np.isfinite(t):
            raise InputFileError(_NAN_THRESHOLD.format(path, rule, label))
        out[label] = t
    return out


def cost_values(info: RunInfo) -> dict[str, float]:
    """Cost rows from ``config.json`` (``n_params``) and ``history.csv`` (sum of seconds, max peak memory)."""
    out: dict[str, float] = {}
    if info.config.get("n_params") not in (None, ""):
        out["n_params"] = float(info.config["n_params"])
    hist = info.run_dir / "history.csv"
    if hist.exists():
        h = pd.read_csv(hist)
        if "seconds" in h.columns and h["seconds"].notna().any():
            out["train_seconds"] = float(pd.to_numeric(h["seconds"], errors="coerce").sum())
        if "peak_memory_mb" in h.columns and h["peak_memory_mb"].notna().any():
            out["peak_memory_mb"] = float(pd.to_numeric(h["peak_memory_mb"], errors="coerce").max())
    return out


def check_aligned(out: pd.DataFrame, pred: pd.DataFrame, run_dir: Path, split: str) -> None:
    """``predict_fn`` must return the rows of ``predictions_<split>.csv`` in the same stay order."""
    ok = len(out) == len(pred) and "stay_id" in out.columns
    ok = ok and np.array_equal(out["stay_id"].to_numpy(), pred["stay_id"].to_numpy())
    if not ok:
        raise InputFileError(_MISALIGNED.format(len(out), run_dir, split, len(pred), predictions_path(run_dir, split)))
