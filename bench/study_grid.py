"""The `carebench` study preset without tuning, embeddings mode, on a scaled synthetic workspace: wall time and
runs/hour of the grid's training, sequential (`--jobs 1`) against a process pool (`--jobs N`), and the
evaluation phase (eval-missing + eval-fair) timed separately.

    .venv/bin/python bench/study_grid.py [--n-stays 2000] [--folds 0] [--epochs 5] [--jobs 1 --jobs 2]

Each setting trains in its own copy of the prepared workspace (identical run ids would otherwise be reused).
The prepared workspace is generated once under bench/out/study-grid/prep (synthetic source, 30 s encoder).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MMFAIR = [sys.executable, "-m", "mmfair"]


def prepare(out: Path, n_stays: int) -> Path:
    ws = out / f"prep-{n_stays}"
    if not (ws / "data" / "features.h5").exists():
        subprocess.run([*MMFAIR, "-q", "--workspace", str(ws), "prep", "--n-stays", str(n_stays), "--encoder-budget", "30"],
                       check=True)
    return ws


def study_file(out: Path, args: argparse.Namespace, evaluate: bool) -> Path:
    from mmfair.core.study import load_study

    spec = load_study(preset="carebench").model_dump(mode="json")
    spec.update(name="grid", folds=args.folds, seeds=args.seeds, tuning={"trials": 0},
                train={**spec["train"], "epochs": args.epochs, "patience": args.epochs})
    if args.methods:
        spec["methods"] = args.methods
    if not evaluate:
        spec.update(eval_missing=[], eval_fair=None)
    path = out / ("study_eval.yaml" if evaluate else "study.yaml")
    path.write_text(yaml.safe_dump(spec))
    return path


def run(ws: Path, study: Path, jobs: int, device: str = "cpu", runs_per_gpu: int = 1) -> float:
    started = time.perf_counter()
    subprocess.run([*MMFAIR, "-q", "--workspace", str(ws), "study", "run", str(study), "--jobs", str(jobs),
                    "--device", device, "--runs-per-gpu", str(runs_per_gpu)], check=True)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-stays", type=int, default=2000)
    p.add_argument("--folds", type=int, nargs="+", default=[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (no early stop: equal work per run)")
    p.add_argument("--methods", nargs="*", default=None, help="default: the preset's 25")
    p.add_argument("--jobs", type=int, action="append", default=None,
                   help="settings to compare (repeatable); with --device cuda: runs per GPU")
    p.add_argument("--device", default="cpu", help="cpu | cuda (then each --jobs value is --runs-per-gpu)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "study-grid")
    p.add_argument("--prepared", type=Path, default=None, help="an already prepared workspace to copy data/ from")
    args = p.parse_args()
    jobs = args.jobs or [1, 2]
    args.out.mkdir(parents=True, exist_ok=True)
    prepped = args.prepared or prepare(args.out, args.n_stays)
    train_only = study_file(args.out, args, evaluate=False)
    with_eval = study_file(args.out, args, evaluate=True)
    rows = []
    for n in jobs:
        ws = args.out / f"ws-jobs{n}"
        shutil.rmtree(ws, ignore_errors=True)
        shutil.copytree(prepped / "data", ws / "data")
        gpu = args.device != "cpu"
        seconds = run(ws, train_only, 1 if gpu else n, args.device, n if gpu else 1)
        n_runs = len(list((ws / "runs").glob("*/DONE")))
        # every run is done: this is the evaluation phase alone (in the coordinating process whatever --jobs
        # says, so it is timed once, after the last setting)
        eval_seconds = run(ws, with_eval, 1 if gpu else n, args.device, n if gpu else 1) if n == jobs[-1] else float("nan")
        rows.append((n, n_runs, seconds, 3600 * n_runs / seconds, eval_seconds))
        print(f"--jobs {n}: {n_runs} runs in {seconds:.0f} s ({3600 * n_runs / seconds:.0f} runs/h); "
              f"evaluation {eval_seconds:.0f} s", flush=True)
    print("\n| setting | runs | training wall time | runs/hour | evaluation (eval-missing + eval-fair) |")
    print("|---|---:|---:|---:|---:|")
    for n, n_runs, seconds, rate, ev in rows:
        ev_text = "—" if ev != ev else f"{ev:.0f} s"
        print(f"| `--jobs {n}` | {n_runs} | {seconds:.0f} s | {rate:.0f} | {ev_text} |")


if __name__ == "__main__":
    main()
