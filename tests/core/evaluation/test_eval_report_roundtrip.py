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
