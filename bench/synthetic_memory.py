"""Peak memory and time of the synthetic generator as the tree grows: does it stay bounded?

    .venv/bin/python bench/synthetic_memory.py [--n-stays 6000 --n-stays 75000] [--chart-volume compact]

Each size is generated from scratch in a fresh child process into ``bench/out/synthetic-memory/`` (deleted
afterwards unless ``--keep``), and the child reports its own peak RSS (the image-drawing worker processes,
a few tens of MB each, are not included), its wall time and the generator's stage seconds. Generator
version 2 draws the events a chunk of ``EVENT_CHUNK_STAYS`` ICU stays at a time, so the peak should stay
near that of one chunk however many stays are asked for; the table prints the peak per ICU stay that a
whole-table generator would have needed for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    import pandas as pd

    from mmfair.core.config import SyntheticConfig
    from mmfair.core.synthetic import EVENT_CHUNK_STAYS, GENERATOR_VERSION, generate_source

    tree = args.out / f"source-{args.n_stays[0]}-{args.chart_volume}"
    shutil.rmtree(tree, ignore_errors=True)
    clock = time.perf_counter()
    src = generate_source(SyntheticConfig(n_stays=args.n_stays[0], chart_volume=args.chart_volume), tree)
    seconds = time.perf_counter() - clock
    icu_stays = len(pd.read_csv(src.mimic_root / "icu" / "icustays.csv.gz", usecols=["stay_id"]))
    stages = json.loads((src.ground_truth / "DONE").read_text())["seconds"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not args.keep:
        shutil.rmtree(tree, ignore_errors=True)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "icu_stays": icu_stays, "stages": stages,
                      "chunk": EVENT_CHUNK_STAYS, "version": GENERATOR_VERSION}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-stays", type=int, action="append", help="cohort stays (repeatable)")
    parser.add_argument("--chart-volume", choices=("compact", "mimic"), default="compact")
    parser.add_argument("--out", type=Path, default=Path("bench/out/synthetic-memory"))
    parser.add_argument("--keep", action="store_true", help="keep the generated trees")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.n_stays = args.n_stays or [6000, 75000]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args)
        return
    results = []
    for n in args.n_stays:
        cmd = [sys.executable, __file__, "--child", "--n-stays", str(n), "--chart-volume", args.chart_volume,
               "--out", str(args.out)] + (["--keep"] if args.keep else [])
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
        results.append((n, json.loads(done.stdout.strip().splitlines()[-1])))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    first = results[0][1]
    print(f"machine: {cores} cores, {platform.machine()}, Python {platform.python_version()}; generator version "
          f"{first['version']}, events drawn {first['chunk']:,} ICU stays at a time; chart volume {args.chart_volume}\n")
    print("| cohort stays | ICU stays | chunks | wall, s | events and MIMIC tables, s | images, s | "
          "peak RSS, MB | peak per ICU stay, kB |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in results:
        chunks = -(-r["icu_stays"] // r["chunk"])
        print(f"| {n:,} | {r['icu_stays']:,} | {chunks} | {r['seconds']:.0f} | "
              f"{r['stages'].get('events_and_mimic_tables', float('nan')):.0f} | {r['stages'].get('draw_cxr', 0):.0f} | "
              f"{r['peak_mb']:,.0f} | {r['peak_mb'] * 1024 / r['icu_stays']:.1f} |")


if __name__ == "__main__":
    main()
