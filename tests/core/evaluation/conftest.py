"""Tiny fake run folders (DESIGN §3.3) and a fake ``predict_fn`` for the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SLUGS = ("sepsis", "chf", "copd")


def _predictions(rng, n_subjects: int, fold: int, kind: str, cxr_share: float) -> pd.DataFrame:
    stays_per_subject = rng.choice([1, 2], size=n_subjects, p=[0.7, 0.3])
    subject = np.repeat(np.arange(1000, 1000 + n_subjects), stays_per_subject)
    n = subject.size
    df = pd.DataFrame({"stay_id": np.arange(30000, 30000 + n), "fold": fold})
    present_cxr = (rng.random(n) < cxr_share).astype(int)
    if kind == "binary":
        y = (rng.random(n) < 0.3).astype(int)
        logit = 1.2 * (y - 0.3) + 0.8 * present_cxr * (y - 0.3) + rng.normal(0, 1, n)
        df["label"] = y
        df["score"] = np.round(1 / (1 + np.exp(-logit)), 2)  # rounding makes ties
    elif kind == "multilabel":
        for k, slug in enumerate(SLUGS):
            y = (rng.random(n) < 0.25 + 0.1 * k).astype(int)
            logit = 1.5 * (y - 0.3) + rng.normal(0, 1, n)
            df[f"label_{slug}"] = y
            df[f"score_{slug}"] = np.round(1 / (1 + np.exp(-logit)), 3)
    else:  # multiclass (length of stay)
        y = rng.integers(0, 7, n)
        logits = rng.normal(0, 1, (n, 7))
        logits[np.arange(n), y] += 1.5
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        df["label"] = y
        for c in range(7):
            df[f"score_{c}"] = p[:, c]
    df["subject_id"] = subject
    df["gender"] = rng.choice(["F", "M"], size=n)
    df["age_group"] = rng.choice(["18-39", "40-59", "60-79", "80+"], size=n)
    df["race_group"] = rng.choice(["WHITE", "BLACK", "ASIAN"], size=n, p=[0.6, 0.3, 0.1])
    df["insurance_group"] = rng.choice(["Medicare", "Private"], size=n)
    df["present_ehr"] = 1
    df["present_cxr"] = present_cxr
    return df


def write_run(root: Path, name: str, *, kind: str = "binary", method: str = "late", fold: int = 0,
              seed: int = 0, n_subjects: int = 150, data_seed: int = 0, cxr_share: float = 0.7,
              thresholds: dict | None = None) -> Path:
    """Write a finished run folder with deterministic fake predictions."""
    rng = np.random.default_rng(data_seed)
    run = Path(root) / name
    run.mkdir(parents=True)
    task = {"binary": "mortality", "multilabel": "phenotype", "multiclass": "los"}[kind]
    cfg = {"run_id": name, "method": method, "fusion": method, "task": task, "fold": fold, "seed": seed,
           "modalities": ["ehr", "cxr"], "train_cohort": "full", "test_cohort": "full",
           "train_missing_rate": 0.0, "n_params": 12345}
    (run / "config.json").write_text(json.dumps(cfg))
    val = _predictions(rng, n_subjects, (fold + 1) % 5, kind, cxr_share)
    test = _predictions(rng, n_subjects, fold, kind, cxr_share)
    val.to_csv(run / "predictions_val.csv", index=False)
    test.to_csv(run / "predictions_test.csv", index=False)
    if thresholds is None:
        labels = ["all"] if kind == "binary" else list(SLUGS)
        thresholds = {"val-youden": {lab: 0.45 for lab in labels}}
    (run / "threshold.json").write_text(json.dumps(thresholds))
    pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.6, 0.5], "val_loss": [0.7, 0.65, 0.6],
                  "val_auroc": [0.6, 0.7, 0.72], "val_auprc": [0.4, 0.5, 0.52],
                  "seconds": [1.5, 2.0, 2.5], "peak_memory_mb": [100.0, 180.0, 150.0]}).to_csv(
        run / "history.csv", index=False)
    (run / "DONE").write_text("")
    return run


class FakePredict:
    """Deterministic ``predict_fn``: removing the CXR pulls a stay's score towards 0.5.

    ``handles_missing=False`` writes an empty score for a stay whose CXR is removed or absent.
    Records every call so tests can check the masks and the cache.
    """

    def __init__(self, handles_missing: bool = True) -> None:
        self.handles_missing = handles_missing
        self.calls: list[tuple[Path, str, dict[str, np.ndarray]]] = []
        self.transforms: list = []  # the ehr_transform of each call (None for presence-only removals)

    def __call__(self, run_dir: Path, split: str, present_override: dict[str, np.ndarray],
                 ehr_transform=None) -> pd.DataFrame:
        self.calls.append((run_dir, split, {k: np.asarray(v).copy() for k, v in present_override.items()}))
        self.transforms.append(ehr_transform)
        df = pd.read_csv(Path(run_dir) / f"predictions_{split}.csv")
        keep = np.asarray(present_override.get("cxr", np.ones(len(df), dtype=bool)), dtype=bool)
        had = df["present_cxr"].to_numpy() > 0
        now = had & keep
        removed = had & ~keep
        if ehr_transform is not None:  # an EHR perturbation pulls the perturbed stays' scores too
            removed = removed | np.asarray(ehr_transform.stays, dtype=bool)
        score_cols = [c for c in df.columns if c.startswith("score")]
        for col in score_cols:
            s = df[col].to_numpy(dtype=float)
            s = np.where(removed, 0.5 + 0.3 * (s - 0.5), s)
            if not self.handles_missing:
                s = np.where(now, s, np.nan)
            df[col] = s
        df["present_cxr"] = now.astype(int)
        return df


@pytest.fixture
def make_run(tmp_path):
    def _make(name: str = "run-a", **kw) -> Path:
        return write_run(tmp_path / "runs", name, **kw)

    return _make


@pytest.fixture
def fake_predict():
    """Factory of fake ``predict_fn`` objects: ``fake_predict(handles_missing=True)``."""
    return FakePredict
