"""How much each method leaves on the table: out-of-fold AUROC on the planted source of `make check-planted`
(5,000 synthetic stays, the same prep), before tuning (every method at its defaults) and after `mmfair study`'s
equal-budget tuning (the same trials per method and outer fold, on that fold's validation only), next to the
generator's oracle AUROC on the same stays.

    .venv/bin/python bench/planted_tuning.py [--trials 6] [--jobs 2] [--out bench/out/planted-tuning]

The prepared workspace is generated once (reused on a rerun); each study trains in its own copy of it, so the
untuned and tuned final runs never share a results table. Both studies resume when run again. The table goes
to stdout and to <out>/planted_tuning.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
MMFAIR = [sys.executable, "-m", "mmfair"]
METHODS = ["ehr", "cxr", "late", "early", "gbm-ehr", "gbm-early", "gbm-late"]
FOLDS = [0, 1, 2, 3, 4]
N_STAYS = 5000  # tests/test_planted.py's N_STAYS


def prepare(out: Path) -> Path:
    """The check-planted workspace: 5,000 synthetic stays, images stored at 128 px."""
    from mmfair.core import pipeline
    from mmfair.core.config import PrepConfig, SyntheticConfig
    from mmfair.core.workspace import Workspace

    ws = out / "prep"
    if not (ws / "data" / "prep.json").exists():
        pipeline.prep(PrepConfig(image_size=128), Workspace.resolve(ws), synthetic=SyntheticConfig(n_stays=N_STAYS))
    return ws


def study_file(out: Path, name: str, trials: int, objective: str) -> Path:
    spec = {"name": name, "methods": METHODS, "tasks": ["mortality"], "folds": FOLDS, "seeds": [0],
            "tuning": {"trials": trials, "objective": objective}, "eval_missing": [], "eval_fair": None}
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_study(prep_ws: Path, out: Path, name: str, trials: int, objective: str, jobs: int) -> tuple[Path, float]:
    ws = out / name
    if not ws.exists():
        shutil.copytree(prep_ws, ws, ignore=shutil.ignore_patterns("runs", "results", "studies", "reports"))
    started = time.perf_counter()
    subprocess.run([*MMFAIR, "-q", "--workspace", str(ws), "study", "run", str(study_file(out, name, trials, objective)),
                    "--jobs", str(jobs), "--device", "cpu"], check=True)
    return ws, time.perf_counter() - started


def out_of_fold(ws: Path) -> pd.DataFrame:
    """One column of test scores per method (the fold's final run), on every stay with both modalities."""
    parts: dict[str, list[pd.DataFrame]] = {m: [] for m in METHODS}
    for run_dir in sorted((ws / "runs").iterdir()):
        if not (run_dir / "DONE").exists():
            continue
        fusion = json.loads((run_dir / "config.json").read_text())["fusion"]
        parts[fusion].append(pd.read_csv(run_dir / "predictions_test.csv"))
    table = None
    for method, frames in parts.items():
        df = pd.concat(frames, ignore_index=True)
        if sorted(df["fold"].unique()) != FOLDS or df["stay_id"].duplicated().any():
            raise SystemExit(f"{ws}: {method} does not have exactly one final run per fold")
        if table is None:
            table = df.loc[df["present_cxr"] == 1, ["stay_id", "subject_id", "label"]]
        table = table.merge(df[["stay_id", "score"]].rename(columns={"score": method}), on="stay_id")
    return table


def chosen_values(ws: Path) -> dict[str, str]:
    """Per method, the chosen values of fold 0 (the others are in the study folder)."""
    found = {}
    for path in sorted((ws / "studies").rglob("chosen.json")):
        data = json.loads(path.read_text())
        if data.get("fold") == 0 and data.get("method") in METHODS:
            found[data["method"]] = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in sorted(data.get("params", {}).items()))
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--objective", default="auroc")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "planted-tuning")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from mmfair.core.evaluation.metrics import auroc

    started = time.perf_counter()
    prep_ws = prepare(args.out)
    prep_s = time.perf_counter() - started
    before_ws, before_s = run_study(prep_ws, args.out, "untuned", 0, args.objective, args.jobs)
    after_ws, after_s = run_study(prep_ws, args.out, "tuned", args.trials, args.objective, args.jobs)
    before, after = out_of_fold(before_ws), out_of_fold(after_ws)
    truth = pd.read_csv(prep_ws / "source" / "ground_truth" / "stays.csv")
    oracle = before[["stay_id", "label"]].merge(truth, on="stay_id", how="left")
    oracle_both = auroc(oracle["label"], oracle["oracle_mortality__ehr+cxr"])
    lines = [f"Out-of-fold test AUROC, 5 folds, mortality, stays with both modalities (n={len(before)}, "
             f"deaths={int(before['label'].sum())}); tuning: {args.trials} trials per method and outer fold, "
             f"objective validation {args.objective}, trial 0 = defaults. Oracle (generator, EHR+CXR): {oracle_both:.3f}.",
             "", "| method | before tuning | after tuning | oracle − after | chosen on fold 0 |", "|---|---|---|---|---|"]
    chosen = chosen_values(after_ws)
    for m in METHODS:
        b, a = auroc(before["label"], before[m]), auroc(after["label"], after[m])
        lines.append(f"| {m} | {b:.3f} | {a:.3f} | {oracle_both - a:+.3f} | {chosen.get(m, '')} |")
    lines += ["", f"Wall time on this machine: prep {prep_s:.0f} s (0 when reused), untuned study {before_s:.0f} s, "
                  f"tuned study {after_s:.0f} s (--jobs {args.jobs})."]
    report = "\n".join(lines)
    (args.out / "planted_tuning.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
