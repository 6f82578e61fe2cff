"""Behaviour unchanged? The `make demo` pipeline run by two versions of mmfair on fresh workspaces, and every
results table compared row by row.

    .venv/bin/python bench/refactor_equivalence.py --base f72eace [--current HEAD] [--out bench/out/equivalence]

The base version is exported with `git archive` and run from its own source tree (PYTHONPATH); so is the
current one when `--current REV` names a revision (else the working tree runs); both with this venv. Each side runs the demo's commands (prep with the step-stopped CXR
encoder, so its weights are a pure function of the seed; train ehr, cxr, late, early on fold 0; eval-missing;
eval-fair). Rows are joined on the tidy key columns without `run_id` (run ids may change when the identity
schema does) and `scenario_params` is compared with its run references removed; the timing metrics
(train_seconds, peak_memory_mb, infer_stays_per_s), `mmfair_version` and `protocol` (a version number that a
behaviour change elsewhere may bump; the rows it labels are compared all the same) are left out. Every other value must be
equal. A side whose workspace finished is reused (delete it to rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"train_seconds", "peak_memory_mb", "infer_stays_per_s"}
DEMO = [
    ["prep"],
    ["train", "--fusion", "ehr", "--fusion", "cxr", "--fusion", "late", "--fusion", "early", "--task", "mortality",
     "--fold", "0"],
    ["eval-missing", "--rate", "0.2", "--rate", "0.5", "--rate", "1.0", "--bootstrap", "200", "--draws", "2"],
    ["eval-fair", "--bootstrap", "200"],
]


def export(rev: str, out: Path) -> Path:
    src = out / f"src-{rev}"
    if not (src / "mmfair").is_dir():
        src.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src


def run_demo(src: Path, ws: Path) -> None:
    done = ws / "EQUIVALENCE_DONE"
    if done.exists():
        return
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    for command in DEMO:
        subprocess.run([sys.executable, "-m", "mmfair", "-q", "--workspace", str(ws), *command], check=True, env=env,
                       cwd=src)
    done.write_text("")


def _without_runs(params: str) -> str:
    try:
        data = json.loads(params)
    except (TypeError, ValueError):
        return params
    if not isinstance(data, dict):
        return params
    return json.dumps({k: v for k, v in sorted(data.items()) if "run" not in k}, sort_keys=True)


def comparable(path: Path) -> pd.DataFrame:
    from mmfair.core.evaluation.tidy import KEY_COLUMNS, read_results

    df = read_results(path)
    df = df.loc[~df["metric"].isin(TIMING)].drop(columns=["run_id", "mmfair_version", "protocol"])
    df["scenario_params"] = df["scenario_params"].map(_without_runs)
    keys = [c for c in KEY_COLUMNS if c != "run_id"]
    return df.set_index(keys).sort_index()


def differences(base: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    found = []
    only_base, only_current = base.index.difference(current.index), current.index.difference(base.index)
    if len(only_base) or len(only_current):
        found.append(f"{len(only_base)} rows only in base, {len(only_current)} only in current")
    common = base.index.intersection(current.index)
    a, b = base.loc[common], current.loc[common, base.columns]
    for column in a.columns:
        x, y = a[column], b[column]
        if pd.api.types.is_float_dtype(x):
            same = np.isclose(x.to_numpy(float), y.to_numpy(float), rtol=0, atol=0, equal_nan=True)
        else:  # both missing counts as equal (a missing value never equals itself in pandas' string dtype)
            same = ((x.isna() & y.isna()) | (x.astype(str) == y.astype(str)).fillna(False)).to_numpy(bool)
        if not same.all():
            found.append(f"{column}: {int((~same).sum())} of {len(same)} rows differ")
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="git revision before the change")
    p.add_argument("--current", default=None, help="git revision after the change (default: the working tree)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "equivalence")
    args = p.parse_args()
    sides = {"base": export(args.base, args.out), "current": export(args.current, args.out) if args.current else ROOT}
    for name, src in sides.items():
        run_demo(src, args.out / f"ws-{name}")
    failed = False
    for table in sorted((args.out / "ws-base" / "results").glob("*.csv")):
        other = args.out / "ws-current" / "results" / table.name
        if not other.exists():
            print(f"{table.name}: missing in current")
            failed = True
            continue
        base, current = comparable(table), comparable(other)
        found = differences(base, current)
        print(f"{table.name}: {len(base)} rows compared; " + ("identical" if not found else "; ".join(found)))
        failed |= bool(found)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
