"""Eight ``mmfair train`` processes at once on one workspace (issue 16): each upserts its clean metrics into the
one results/metrics.csv, so a writer that read the table before another's rename would drop that one's rows.
Every process must succeed, every run folder be complete, and every run's rows be in metrics.csv exactly
once and equal to what evaluating that run alone gives."""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import product

import pandas as pd
import pytest

from tiny_workspace import build_tiny_workspace
from mmfair.core.evaluation import evaluate_clean
from mmfair.core.evaluation.tidy import KEY_COLUMNS, normalise, read_results

pytestmark = pytest.mark.slow

BOOTSTRAP = 20
#: wall-clock measurements: they differ between any two evaluations (tidy.py HIGHER_IS_BETTER)
TIMING = {"train_seconds", "peak_memory_mb", "infer_stays_per_s"}
JOBS = list(product(("ehr", "late"), (0, 1), (0, 1)))  # fusion, fold, seed: 8 distinct runs
RUN_FILES = ("config.json", "model.pt", "history.csv", "scaling.json", "threshold.json",
             "predictions_val.csv", "predictions_test.csv", "DONE")


def _key_sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[~frame["metric"].isin(TIMING)]
    return frame.sort_values(list(KEY_COLUMNS)).reset_index(drop=True)


def test_eight_concurrent_trains_lose_and_duplicate_no_row(tmp_path):
    ws = build_tiny_workspace(tmp_path / "ws")
    procs = []
    for fusion, fold, seed in JOBS:
        cmd = [sys.executable, "-m", "mmfair", "--workspace", str(ws.root), "train", "-f", fusion,
               "--fold", str(fold), "--seed", str(seed), "--epochs", "3", "--hidden-dim", "16",
               "--batch-size", "32", "--bootstrap", str(BOOTSTRAP), "--device", "cpu"]
        log = open(tmp_path / f"{fusion}-{fold}-{seed}.log", "wb")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "HF_HUB_OFFLINE": "1"}), log))
    for (proc, log), job in zip(procs, JOBS):
        code = proc.wait(timeout=900)
        log.close()
        assert code == 0, (job, (tmp_path / "{}-{}-{}.log".format(*job)).read_text()[-3000:])

    run_dirs = sorted(p for p in ws.runs.iterdir() if p.is_dir())
    assert len(run_dirs) == len(JOBS)
    for run_dir in run_dirs:
        assert [n for n in RUN_FILES if not (run_dir / n).exists()] == [], run_dir
        assert not (run_dir / "checkpoint.pt").exists()
    leftovers = [p.name for folder in (ws.results, ws.runs, *run_dirs) for p in folder.iterdir()
                 if p.name.endswith(".tmp")]
    assert leftovers == []

    table = read_results(ws.metrics_csv)
    assert not table.duplicated(list(KEY_COLUMNS)).any(), "duplicated rows in metrics.csv"
    assert sorted(table["run_id"].unique()) == sorted(p.name for p in run_dirs)
    # each run alone, evaluated the way `train` evaluates it: the concurrent table holds exactly these rows
    alone = normalise(pd.concat([evaluate_clean([d], bootstrap=BOOTSTRAP, seed=0) for d in run_dirs]))
    got, want = _key_sorted(table), _key_sorted(alone)
    assert len(got) == len(want) > 8 * 5
    pd.testing.assert_frame_equal(got, want, check_exact=True)
