"""Patient-equal weighting: a patient with three stays counts once (hand-computed against deduplicated data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from mmfair.core.evaluation.clean import evaluate_clean
from mmfair.core.evaluation.weighting import evaluate_clean_patient, patient_weights


def test_weights_sum_to_one_per_patient():
    subjects = np.array([7, 7, 7, 8, 9, 9])
    w = patient_weights(subjects, np.array([True, True, True, True, True, False]))
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 1, 1, 0])


def _run(tmp_path, frame: pd.DataFrame):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"run_id": "r", "method": "late", "task": "mortality", "fold": 0,
                                                 "seed": 0, "modalities": ["ehr", "cxr"]}))  # fmt: skip
    frame.to_csv(run / "predictions_test.csv", index=False)
    (run / "DONE").write_text("")
    return run


def test_a_patient_with_three_stays_counts_once(tmp_path):
    # patient 1 has three identical positive stays scored low; everyone else has one stay
    singles = pd.DataFrame({"subject_id": np.arange(2, 10), "label": [1, 1, 0, 0, 0, 0, 1, 0],
                            "score": [0.9, 0.7, 0.6, 0.2, 0.3, 0.4, 0.8, 0.35]})  # fmt: skip
    repeated = pd.DataFrame({"subject_id": [1, 1, 1], "label": [1, 1, 1], "score": [0.15, 0.15, 0.15]})
    frame = pd.concat([repeated, singles], ignore_index=True)
    frame.insert(0, "stay_id", np.arange(100, 100 + len(frame)))
    frame["present_cxr"] = 1
    run = _run(tmp_path, frame)

    once = pd.concat([repeated.head(1), singles])  # what "every patient counts once" means here
    rows = evaluate_clean_patient([run], bootstrap=50, seed=0)
    got = rows[rows.evaluated_on == "all"].set_index("metric")
    assert set(rows.weighting) == {"patient"} and int(got.loc["auroc", "n"]) == len(frame)
    assert np.isclose(got.loc["auroc", "value"], roc_auc_score(once.label, once.score))
    assert np.isclose(got.loc["auprc", "value"], average_precision_score(once.label, once.score))
    assert np.isclose(got.loc["brier", "value"], np.mean((once.score - once.label) ** 2))
    assert got.loc["auroc", "ci_low"] <= got.loc["auroc", "value"] <= got.loc["auroc", "ci_high"]

    stay = evaluate_clean([run], bootstrap=0)  # the stay rows weigh patient 1 three times: lower AUROC
    stay_auroc = stay[(stay.metric == "auroc") & (stay.evaluated_on == "all")]["value"].iloc[0]
    assert np.isclose(stay_auroc, roc_auc_score(frame.label, frame.score))
    assert stay_auroc < got.loc["auroc", "value"]


def test_an_unscorable_stay_leaves_the_patient_rows_undefined(tmp_path):
    frame = pd.DataFrame({"stay_id": [1, 2, 3, 4], "subject_id": [1, 1, 2, 3], "label": [1, 0, 1, 0],
                          "score": [0.9, np.nan, 0.2, 0.1], "present_cxr": [1, 0, 1, 1]})  # fmt: skip
    rows = evaluate_clean_patient([_run(tmp_path, frame)], bootstrap=0)
    by = rows.set_index(["evaluated_on", "metric"])
    assert not by.loc[("all", "auroc"), "defined"]  # the coverage rule, as for stay rows
    assert by.loc[("with_cxr", "auroc"), "defined"]


def test_the_report_keeps_patient_weighted_rows_apart(tmp_path):
    from mmfair.core.evaluation.tidy import to_frame
    from mmfair.core.reporting.tables import build_tables

    frame = pd.DataFrame({"stay_id": np.arange(100, 112), "subject_id": [1, 1, 1, *range(2, 11)],
                          "label": [1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0],
                          "score": [0.15, 0.15, 0.15, 0.9, 0.7, 0.6, 0.2, 0.3, 0.4, 0.8, 0.35, 0.1],
                          "present_cxr": 1})  # fmt: skip
    run = _run(tmp_path, frame)
    rows = pd.concat([evaluate_clean([run], bootstrap=0), evaluate_clean_patient([run], bootstrap=0)])
    tables = build_tables(to_frame(rows.to_dict("records")), to_frame([]), to_frame([]))
    stay = tables["clean"].iloc[0]["AUROC"]
    patient = tables["clean_patient"]
    assert len(tables["clean"]) == 1 and str(tables["clean"].iloc[0]["runs"]) == "1"  # not pooled with patient rows
    assert set(patient["evaluated_on"]) == {"all", "with_cxr"} and patient.iloc[0]["AUROC"] != stay
