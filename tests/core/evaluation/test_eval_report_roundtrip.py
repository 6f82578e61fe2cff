"""From run folders to report.md through the results CSVs, as the CLI chains them."""

from mmfair.core.config import EvalFairConfig, EvalMissingConfig
from mmfair.core.evaluation import evaluate_clean, evaluate_fairness, evaluate_missing, read_results, upsert_results
from mmfair.core.reporting import build_tables, render_markdown


def test_runs_to_markdown(tmp_path, make_run, fake_predict):
    runs = [make_run("late-0"), make_run("early-0", method="early", data_seed=2), make_run("ph", kind="multilabel")]
    res = tmp_path / "results"
    upsert_results(res / "metrics.csv", evaluate_clean(runs, bootstrap=20))
    upsert_results(res / "missing.csv", evaluate_missing(runs, EvalMissingConfig(rates=(0.5,), draws=2, bootstrap=20),
                                                         fake_predict(handles_missing=False)))
    upsert_results(res / "fairness.csv", evaluate_fairness(runs, EvalFairConfig(bootstrap=20)))
    tables = build_tables(read_results(res / "metrics.csv"), read_results(res / "missing.csv"),
                          read_results(res / "fairness.csv"), min_group_size=10)
    assert set(tables["clean"]["method"]) == {"late", "early"}
    assert {"0%", "50%"} <= set(tables["missing"].columns)
    assert len(tables["fairness_groups"]) and len(tables["fairness_gaps"])
    md = render_markdown(tables)
    assert "## Fairness gaps" in md and "| late |" in md


def test_a_demo_like_workspace_is_mostly_comparable(tmp_path, make_run):
    # issue 11: the demo's four methods (ehr, cxr, late, early) on one fold. Only the CXR-only model is n/a on all
    # stays; on the stays with a CXR every method has a value, every comparison is made, with n printed equal
    import json

    import numpy as np
    import pandas as pd

    from mmfair.core.evaluation.reference_comparisons import evaluate_comparisons
    from mmfair.core.reporting.comparisons import statistics_tables

    runs = []
    for name in ("ehr", "cxr", "late", "early"):
        run = make_run(f"{name}-0", method=name)
        if name == "cxr":
            path = run / "predictions_test.csv"
            pred = pd.read_csv(path)
            pred["score"] = np.where(pred.present_cxr > 0, pred.score, np.nan)
            pred.to_csv(path, index=False)
            cfg = json.loads((run / "config.json").read_text())
            (run / "config.json").write_text(json.dumps({**cfg, "modalities": ["cxr"]}))
        runs.append(run)
    metrics = evaluate_clean(runs, bootstrap=20)
    fairness = evaluate_comparisons(runs, EvalFairConfig(attributes=("gender",), bootstrap=20, permutations=0))
    tables = build_tables(metrics, None, None)
    on_all, on_cxr = tables["clean"], tables["clean_with_cxr"]
    assert (on_all["AUROC"] == "n/a").sum() == 1 and on_all.set_index("method").loc["cxr", "AUROC"] == "n/a"
    assert not (on_cxr["AUROC"] == "n/a").any() and on_cxr["n"].nunique() == 1 and on_all["n"].nunique() == 1
    comparisons = statistics_tables(metrics, fairness)["comparisons"]
    assert len(comparisons) == 3 and not (comparisons["verdict"] == "undefined").any()
    assert comparisons.set_index("method").loc["cxr", "stays"] == "with_cxr"
