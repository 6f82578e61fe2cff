"""The tidy schema and the idempotent upsert."""

import numpy as np
import pandas as pd
import pytest

from mmfair.core.config import EvalMissingConfig
from mmfair.core.evaluation import TIDY_COLUMNS, evaluate_clean, evaluate_missing, upsert_results
from mmfair.core.evaluation.tidy import KEY_COLUMNS, make_row, read_results

DESIGN_ORDER = (
    "run_id, method, modalities, task, label, fold, seed, train_cohort, test_cohort, evaluated_on, split, selection, "
    "scenario, scenario_params, missing_rate, train_missing_rate, train_missing, draw, draw_seed, threshold_rule, "
    "weighting, attribute, group, metric, value, higher_is_better, n, n_pos, defined, ci_low, ci_high, protocol, "
    "mmfair_version"
)


def test_columns_in_design_order():
    assert TIDY_COLUMNS == tuple(c.strip() for c in DESIGN_ORDER.split(","))
    values = {"value", "higher_is_better", "n", "n_pos", "defined", "ci_low", "ci_high", "protocol", "mmfair_version"}
    assert set(KEY_COLUMNS) == set(TIDY_COLUMNS) - values


def test_defaults_and_direction():
    row = make_row(run_id="x", metric="equalized_odds_difference", value=0.1)
    assert row["selection"] == "overall" and row["threshold_rule"] == "val-youden"
    assert row["scenario"] == "none" and row["group"] == "all" and row["label"] == "all"
    assert row["higher_is_better"] is False
    undefined = make_row(run_id="x", metric="auroc", value=0.0, defined=False)
    assert np.isnan(undefined["value"])  # undefined is never written as a number
    with pytest.raises(KeyError, match="add it there first"):
        make_row(metric="not_a_metric", value=1.0)


def test_upsert_replaces_instead_of_duplicating(tmp_path, make_run, fake_predict):
    path = tmp_path / "results" / "metrics.csv"
    runs = [make_run("a"), make_run("b", data_seed=1)]
    first = upsert_results(path, evaluate_clean(runs, bootstrap=5))
    again = upsert_results(path, evaluate_clean(runs, bootstrap=5, seed=9))  # same keys, new CIs
    assert len(again) == len(first)
    assert list(pd.read_csv(path).columns) == list(TIDY_COLUMNS)
    only_a = upsert_results(path, evaluate_clean(runs[:1], bootstrap=0))
    assert len(only_a) == len(first)
    back = read_results(path)
    a_auroc = back[(back.run_id == "a") & (back.metric == "auroc") & (back.evaluated_on == "all")]
    assert len(a_auroc) == 1 and np.isnan(a_auroc.ci_low.iloc[0])
    # float keys (missing_rate) and draw seeds survive the CSV round trip
    mpath = tmp_path / "results" / "missing.csv"
    cfg = EvalMissingConfig(rates=(0.2,), draws=2, bootstrap=0)
    m1 = upsert_results(mpath, evaluate_missing(runs[:1], cfg, fake_predict()))
    m2 = upsert_results(mpath, evaluate_missing(runs[:1], cfg, fake_predict()))
    assert len(m1) == len(m2)
    assert not list((tmp_path / "results").glob("*.tmp"))


SCHEMA_1_ROW = (
    "run_id,method,modalities,task,label,fold,seed,train_cohort,test_cohort,split,selection,scenario,"
    "scenario_params,missing_rate,train_missing_rate,train_missing,draw,draw_seed,threshold_rule,attribute,group,"
    "metric,value,higher_is_better,n,n_pos,defined,ci_low,ci_high\n"
    "r1,late,ehr+cxr,mortality,all,0,0,full,full,random,overall,mcar,{},0.5,0,none,1,7,val-youden,all,all,"
    "auroc,0.8,True,30,5,True,0.7,0.9\n"
)


def test_schema_1_file_migrates_with_what_its_rows_did(tmp_path):
    path = tmp_path / "missing.csv"
    path.write_text(SCHEMA_1_ROW)
    df = read_results(path)
    assert tuple(df.columns) == TIDY_COLUMNS
    row = df.iloc[0]
    assert row["evaluated_on"] == "unrecorded" and row["weighting"] == "stay" and int(row["protocol"]) == 1
    assert row["value"] == 0.8 and row["n"] == 30


def test_new_rows_carry_the_current_protocol():
    from mmfair.core.protocol import PROTOCOL_VERSION

    row = make_row(run_id="x", metric="auroc", value=0.7)
    assert row["protocol"] == PROTOCOL_VERSION and row["evaluated_on"] == "all" and row["weighting"] == "stay"


def _write_rows(path: str, worker: int) -> None:
    rows = [make_row(run_id=f"w{worker}", seed=s, metric="auroc", value=0.5 + s / 100) for s in range(5)]
    upsert_results(path, pd.DataFrame(rows))


def test_eight_concurrent_writers_lose_no_row(tmp_path):
    import multiprocessing as mp

    path = str(tmp_path / "metrics.csv")
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_write_rows, args=(path, w)) for w in range(8)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
    assert all(p.exitcode == 0 for p in workers)
    df = read_results(path)
    assert len(df) == 40 and set(df["run_id"]) == {f"w{w}" for w in range(8)}


def test_a_write_killed_midway_leaves_nothing_after_the_next_write(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "fairness.csv"
    upsert_results(path, pd.DataFrame([make_row(run_id="a", method="late", task="mortality", metric="auroc", value=0.7)]))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(gone.stdout), os.getppid()  # a finished process's id, and a running one's
    leftovers = {pid: tmp_path / f".fairness.csv.{pid}.x1y2z3.tmp" for pid in (dead, alive)}
    other_table = tmp_path / f".metrics.csv.{dead}.x1y2z3.tmp"
    for stale in (*leftovers.values(), other_table):
        stale.write_text("half a table")
    upsert_results(path, pd.DataFrame([make_row(run_id="b", method="ehr", task="mortality", metric="auroc", value=0.6)]))
    assert not leftovers[dead].exists()  # its writer is gone: removed under the table's lock
    assert leftovers[alive].exists()  # a live process's is never touched
    assert other_table.exists()  # another table's temporaries wait for a writer of that table
    assert sorted(read_results(path)["run_id"]) == ["a", "b"]
