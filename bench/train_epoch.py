"""Seconds per training epoch of each method on a prepared workspace (default: the demo's).

    .venv/bin/python bench/train_epoch.py [--workspace mmfair-workspace] [--device cpu] [--epochs 5]

Trains each method for a fixed number of epochs (no early stopping) on fold 0 in a scratch copy of the
workspace's runs, and reports the median epoch time from history.csv and the peak memory.
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from mmfair.core.config import TrainConfig
from mmfair.core.training import train_run
from mmfair.core.workspace import Workspace

METHODS = ("ehr", "cxr", "late", "early")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", default="mmfair-workspace")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    args = parser.parse_args()
    source = Workspace.resolve(args.workspace)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Workspace(Path(tmp))
        shutil.copytree(source.data, scratch.data)
        rows = []
        for method in args.methods:
            cfg = TrainConfig(fusion=method, epochs=args.epochs, patience=args.epochs, device=args.device)
            result = train_run(cfg, scratch)
            history = pd.read_csv(result.run_dir / "history.csv")
            rows.append((method, history["seconds"].iloc[1:].median(), history["peak_memory_mb"].max(), len(history)))
    print(f"workspace {source.root}, device {args.device}, fold 0, mortality")
    print("| method | s / epoch (median) | peak memory MB | epochs |\n|---|---|---|---|")
    for method, sec, mem, n in rows:
        print(f"| {method} | {sec:.3f} | {mem:.0f} | {n} |")


if __name__ == "__main__":
    main()
