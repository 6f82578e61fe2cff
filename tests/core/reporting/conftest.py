"""A small hand-made results workspace for the report tests: tidy rows built here, no training.

Four mortality runs (ehr, cxr, late, early) and one phenotype block set for the critical-difference diagram;
per-group rows of race_group with a planted 5-stay group ``TINYGRP`` (and distinctive values, 0.4242, that
must appear in no figure); paired comparisons with late as the reference; MCAR curves of AUROC and of the
EO gap; Shapley rows; the prep aggregates (attrition, table 1, cohort, prep.json); and the four mortality runs'
folders with their predictions (:func:`write_runs`), where EHR is the better single modality on validation
but CXR on test.
"""

import json

import numpy as np
import pandas as pd
import pytest

from mmfair.core.evaluation.tidy import make_row, to_frame
from mmfair.core.io import write_csv_atomic
from mmfair.core.workspace import Workspace

PLANTED = "TINYGRP"
PLANTED_VALUE = 0.4242
METHODS = {"ehr": ("ehr", 0.74), "cxr": ("cxr", 0.70), "late": ("ehr+cxr", 0.78), "early": ("ehr+cxr", 0.80)}
GROUPS = {"WHITE": (300, 40), "BLACK": (120, 20), "ASIAN": (60, 12), PLANTED: (5, 1)}
PHENOS = ("shock", "sepsis", "pneumonia", "renal")


def _run(method: str, task: str = "mortality") -> dict:
    return {"run_id": f"{method}-{task}", "method": method, "modalities": METHODS[method][0], "task": task,
            "fold": 0, "seed": 0}  # fmt: skip


def metrics_rows() -> list[dict]:
    rows = []
    for i, (method, (_, auroc)) in enumerate(METHODS.items()):
        base = _run(method)
        rows += [make_row(**base, metric="auroc", value=auroc, ci_low=auroc - 0.04, ci_high=auroc + 0.04, n=485, n_pos=73),
                 make_row(**base, metric="auprc", value=auroc - 0.4, ci_low=auroc - 0.45, ci_high=auroc - 0.35, n=485,
                          n_pos=73)]  # fmt: skip
        pheno = _run(method, "phenotype")
        for j, label in enumerate(PHENOS):  # early best on every label, then late, ehr, cxr
            v = auroc - 0.01 * j
            rows.append(make_row(**pheno, label=label, metric="auroc", value=v, ci_low=v - 0.05, ci_high=v + 0.05,
                                 n=485, n_pos=60))  # fmt: skip
    return rows


def fairness_rows() -> list[dict]:
    rows = []
    for method, (_, auroc) in METHODS.items():
        base = _run(method)
        for k, (group, (n, n_pos)) in enumerate(GROUPS.items()):
            value = PLANTED_VALUE if group == PLANTED else auroc - 0.03 * k
            g = {**base, "attribute": "race_group", "group": group, "n": n, "n_pos": n_pos}
            rows += [make_row(**g, metric="auroc", value=value, ci_low=value - 0.06, ci_high=value + 0.06),
                     make_row(**g, metric="tpr", value=value - 0.1, ci_low=value - 0.2, ci_high=value),
                     make_row(**g, metric="fpr", value=0.2 + 0.02 * k, ci_low=0.15, ci_high=0.3)]  # fmt: skip
        gap = 0.30 - (auroc - 0.7)  # the better methods are also fairer here, except early
        gap += 0.12 if method == "early" else 0.0
        rows.append(make_row(**base, attribute="race_group", metric="equalized_odds_difference", value=gap,
                             ci_low=gap - 0.05, ci_high=gap + 0.05, n=485, n_pos=73))  # fmt: skip
        rows.append(make_row(**base, attribute="race_group", metric="auroc_gap", value=gap / 2, ci_low=gap / 3,
                             ci_high=gap, n=485, n_pos=73))  # fmt: skip
        if method != "late":
            diff = auroc - METHODS["late"][1]
            ref = json.dumps({"reference": "late", "reference_run": "late-mortality"})
            common = {**base, "scenario_params": ref, "n": 485, "n_pos": 73}
            rows += [make_row(**common, metric="auroc_difference", value=diff, ci_low=diff - 0.02, ci_high=diff + 0.02),
                     make_row(**common, metric="auroc_difference_p", value=0.01 if abs(diff) > 0.03 else 0.2),
                     make_row(**common, metric="auroc_difference_p_adjusted", value=0.01)]  # fmt: skip
    return rows


def missing_rows() -> list[dict]:
    rows = []
    for method, (mods, auroc) in METHODS.items():
        base = _run(method)
        for rate in (0.0, 0.5, 1.0):
            drop = 0.0 if method == "ehr" else (0.06 if method == "late" else 0.1) * rate
            params = json.dumps({"modality": "cxr", "requested_rate": rate})
            point = {**base, "scenario": "mcar", "scenario_params": params, "missing_rate": rate, "n": 250, "n_pos": 40}
            v = auroc - drop
            rows.append(make_row(**point, metric="auroc", value=v, ci_low=v - 0.05, ci_high=v + 0.05))
            rows.append(make_row(**point, attribute="race_group", metric="equalized_odds_difference",
                                 value=0.2 + 0.1 * rate, ci_low=0.1 + 0.1 * rate, ci_high=0.3 + 0.1 * rate))
        if "+" in mods:
            for attr, group, n, n_pos in (("all", "all", 250, 40), ("race_group", "WHITE", 150, 25),
                                          ("race_group", "BLACK", 60, 12), ("race_group", PLANTED, 5, 1)):
                for player, phi in (("ehr", 0.2), ("cxr", 0.08)):
                    v = PLANTED_VALUE if group == PLANTED else phi
                    rows.append(make_row(**{**base, "modalities": player}, metric="shapley", attribute=attr, group=group,
                                         value=v, ci_low=v - 0.05, ci_high=v + 0.05, n=n, n_pos=n_pos))  # fmt: skip
    return rows


#: Signal strength (logit per unit of label) of each run's scores on validation and on test: EHR beats CXR on
#: validation, CXR beats EHR on test (a choice made on test would pick CXR).
SIGNAL = {"ehr": (3.0, 1.0), "cxr": (0.5, 3.0), "late": (2.5, 2.5), "early": (3.0, 3.0)}


def _stays(first_id: int, scale: int, seed: int) -> pd.DataFrame:
    """Stays with GROUPS' sizes and positives (divided by ``scale``), two stays per patient, CXR for ~60 %."""
    rows = []
    for group, (n, n_pos) in GROUPS.items():
        n, n_pos = max(n // scale, 1), max(n_pos // scale, 1)
        rows += [{"race_group": group, "label": int(i < n_pos)} for i in range(n)]
    df = pd.DataFrame(rows)
    df.insert(0, "stay_id", np.arange(first_id, first_id + len(df)))
    df.insert(1, "subject_id", df["stay_id"] // 2)
    df.insert(2, "fold", 0)
    df["present_ehr"] = 1
    df["present_cxr"] = (np.random.default_rng(seed).random(len(df)) < 0.6).astype(int)
    return df


def _scores(stays: pd.DataFrame, method: str, strength: float, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    logit = strength * (stays["label"].to_numpy() - 0.5) - 1.5 + rng.normal(0, 1, len(stays))
    score = pd.Series(np.round(1 / (1 + np.exp(-logit)), 6))
    return score.where(stays["present_cxr"].to_numpy() == 1) if method == "cxr" else score


def write_runs(ws: Workspace) -> None:
    """runs/<method>-mortality/ for the four METHODS: config, threshold, val and test predictions, DONE."""
    val, test = _stays(10_000, 2, 1), _stays(0, 1, 2)
    for i, (method, (mods, _)) in enumerate(METHODS.items()):
        folder = ws.runs / f"{method}-mortality"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({**_run(method), "modalities": mods.split("+")}))
        (folder / "threshold.json").write_text(json.dumps({"val-youden": {"all": 0.3}}))
        for split, stays, strength in (("val", val, SIGNAL[method][0]), ("test", test, SIGNAL[method][1])):
            pred = stays.assign(score=_scores(stays, method, strength, 100 * i + len(split)))
            pred[["stay_id", "subject_id", "fold", "label", "score", "race_group", "present_ehr",
                  "present_cxr"]].to_csv(folder / f"predictions_{split}.csv", index=False)  # fmt: skip
        (folder / "DONE").write_text("")


def write_workspace(root) -> Workspace:
    ws = Workspace.resolve(root)
    write_csv_atomic(ws.metrics_csv, to_frame(metrics_rows()))
    write_csv_atomic(ws.fairness_csv, to_frame(fairness_rows()))
    write_csv_atomic(ws.missing_csv, to_frame(missing_rows()))
    ws.data.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"step": ["all ICU stays", "age >= 18", "ICU stay >= 48 h"], "kept": [600, 595, 485],
                  "removed": [0, 5, 110], "removed_total": [0, 5, 115]}).to_csv(ws.data / "attrition.csv", index=False)
    pd.DataFrame({"by": ["all"] * 3, "group": ["all"] * 3, "n_group": [485] * 3,
                  "characteristic": ["stays", "age", "race_group"], "level": ["", "", PLANTED],
                  "count": [485, 485, 5], "percent": [np.nan, np.nan, 1.0], "mean": [np.nan, 64.1, np.nan],
                  "sd": [np.nan, 16.2, np.nan], "suppressed": [0, 0, 1]}).to_csv(ws.data / "table1.csv", index=False)
    rng = np.random.default_rng(0)
    races = sum(([g] * n for g, (n, _) in GROUPS.items()), [])
    pd.DataFrame({"stay_id": range(len(races)), "race_group": races, "gender": rng.choice(["F", "M"], len(races)),
                  "has_cxr": rng.integers(0, 2, len(races))}).to_csv(ws.cohort_csv, index=False)  # fmt: skip
    (ws.data / "prep.json").write_text(json.dumps({"fingerprint": "fixture0fingerprint", "mimic_version": "2.2",
                                                   "source": "fixture", "n_stays": 485, "n_subjects": 470,
                                                   "n_with_cxr": 240}))  # fmt: skip
    write_runs(ws)
    return ws


@pytest.fixture
def results_ws(tmp_path) -> Workspace:
    return write_workspace(tmp_path / "ws")
