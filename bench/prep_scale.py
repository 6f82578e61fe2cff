"""Time and peak memory of the EHR part of `prep` on a scaled synthetic tree, extrapolated to MIMIC-IV
v2.2's row counts, and the image decode rate.

    .venv/bin/python bench/prep_scale.py [--n-stays 10000] [--memory-limit 6GB] [--variables standard]
                                         [--images 400] [--out bench/out/prep-scale]

1. Generates (or reuses) the synthetic MIMIC-IV v2.2 tree with `--n-stays` cohort stays under
   `<out>/source-<n>` (the same generator as `mmfair prep`), with few non-cohort CXR subjects.
2. Counts the rows of the tables the EHR part reads (not timed).
3. Runs the EHR part of prep (cohort, hourly time series, writing; no CXR root, `--skip-encoder`) in a
   child process and reads its wall time per stage and its peak resident memory (DuckDB included).
4. Extrapolates each stage linearly by the rows it scans, to v2.2's counts (chartevents 313,645,063,
   labevents 118,171,367, outputevents 4,234,967 for the time series; icustays 73,181, admissions 431,231,
   diagnoses_icd 4,756,326 for the cohort). Memory is reported as measured, under `--memory-limit`
   and again under `--low-memory-limit`: DuckDB's part is bounded by the limit (it spills beyond it),
   so the peak at full scale is about the limit plus the Python-side arrays, whose size is printed.
5. Decodes `--images` JPEGs into 256-px squares with `mmfair.core.data.images.load_images` (Pillow draft
   mode, one process per core): the synthetic source's images (320-512 px) and the same number of
   MIMIC-sized ones (2544 x 3056 px, 8-bit, written here once) -> images/s.

Prints a markdown table. Timings on a shared machine are noisy: rerun before quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

V22_ROWS = {"chartevents": 313_645_063, "labevents": 118_171_367, "outputevents": 4_234_967, "icustays": 73_181,
            "admissions": 431_231, "patients": 299_712, "diagnoses_icd": 4_756_326}
TABLES = {"chartevents": "icu/chartevents", "labevents": "hosp/labevents", "outputevents": "icu/outputevents",
          "icustays": "icu/icustays", "admissions": "hosp/admissions", "patients": "hosp/patients",
          "diagnoses_icd": "hosp/diagnoses_icd"}
# which rows each timed stage scans (its cost is taken as proportional to them)
STAGE_DRIVERS = {"cohort": ("icustays", "admissions", "patients", "diagnoses_icd"),
                 "timeseries": ("chartevents", "labevents", "outputevents"),
                 "write": ("icustays",)}
MIMIC_IMAGE = (2544, 3056)


def child(args: argparse.Namespace) -> None:
    """Run the EHR part of prep and print its stage seconds and peak RSS as JSON."""
    from mmfair.core.config import PrepConfig
    from mmfair.core.data.prep import run_prep
    from mmfair.core.data.variables import load_variable_map
    from mmfair.core.workspace import Workspace

    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        config = PrepConfig(mimic_root=args.mimic_root, cxr_root=None, skip_encoder=True, variables=args.variables,
                            memory_limit=args.memory_limit, source_label="synthetic")
        clock = time.perf_counter()
        result = run_prep(config, Workspace.resolve(Path(tmp) / "ws"))
        wall = time.perf_counter() - clock
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "stages": result.stage_seconds, "n_stays": result.n_stays, "peak_mb": peak_mb,
                      "n_features": len(load_variable_map(args.variables).names)}))


def count_rows(mimic_root: Path) -> dict[str, int]:
    from mmfair.core.data.mimic import MimicSource, connect, scan_sql

    source = MimicSource(root=mimic_root, version_hint=None, cxr_root=None)
    con = connect("4GB", 0)
    try:
        return {name: int(con.execute(f"SELECT count(*) FROM {scan_sql(source.table(key), key)}").fetchone()[0])
                for name, key in TABLES.items()}
    finally:
        con.close()


def mimic_sized_jpegs(folder: Path, n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        rng = np.random.default_rng(0)
        w, h = MIMIC_IMAGE
        yy, xx = np.mgrid[0:h, 0:w]
        base = (110 + 60 * np.sin(xx / 300.0) * np.cos(yy / 400.0)).astype(np.float32)
        for k, p in enumerate(missing):
            noise = rng.normal(0, 12, size=(h // 4, w // 4)).astype(np.float32).repeat(4, 0).repeat(4, 1)
            pixels = np.clip(base + noise + (k % 7) * 5, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(p, format="JPEG", quality=95)
    return paths


def decode_rate(paths: list[Path], size: int = 256) -> float:
    from mmfair.core.data.images import load_images

    clock = time.perf_counter()
    load_images(paths, size, workers=0)
    return len(paths) / (time.perf_counter() - clock)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-stays", type=int, default=10_000)
    parser.add_argument("--memory-limit", default="6GB")
    parser.add_argument("--low-memory-limit", default="512MB", help="a second run under this DuckDB limit")
    parser.add_argument("--variables", default="standard")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("bench/out/prep-scale"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mimic-root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args)
        return

    from mmfair.core.config import SyntheticConfig
    from mmfair.core.data.synthetic import generate_source

    clock = time.perf_counter()
    src = generate_source(SyntheticConfig(n_stays=args.n_stays, n_encoder_subjects=50), args.out / f"source-{args.n_stays}")
    gen_seconds = time.perf_counter() - clock
    rows = count_rows(src.mimic_root)

    def run_child(limit: str) -> dict:
        cmd = [sys.executable, __file__, "--child", "--mimic-root", str(src.mimic_root), "--out", str(args.out),
               "--memory-limit", limit, "--variables", args.variables]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        return json.loads(done.stdout.strip().splitlines()[-1])

    measured = run_child(args.memory_limit)
    low = run_child(args.low_memory_limit)

    image_paths = sorted((src.cxr_root / "files").rglob("*.jpg"))[: args.images]
    synthetic_rate = decode_rate(image_paths)
    big_rate = decode_rate(mimic_sized_jpegs(args.out / "mimic-sized-jpegs", args.images))

    stage_rows = []
    total_full = 0.0
    for stage, seconds in measured["stages"].items():
        if stage not in STAGE_DRIVERS:      # images / encoder: not part of the EHR prep (no CXR root here)
            continue
        drivers = STAGE_DRIVERS[stage]
        here = sum(rows[d] for d in drivers)
        factor = sum(V22_ROWS[d] for d in drivers) / max(here, 1)
        stage_rows.append((stage, seconds, factor, seconds * factor))
        total_full += seconds * factor

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cores} cores, {platform.machine()}, Python {platform.python_version()}; "
          f"synthetic tree of {args.n_stays:,} cohort stays (generated or reused in {gen_seconds:.0f} s); "
          f"DuckDB memory limit {args.memory_limit}; variables {args.variables}\n")
    print("| table | rows here | rows in v2.2 | factor |\n|---|---:|---:|---:|")
    for name in TABLES:
        print(f"| {name} | {rows[name]:,} | {V22_ROWS[name]:,} | {V22_ROWS[name] / max(rows[name], 1):.1f} |")
    print("\n| EHR prep stage | seconds here | scale factor (rows scanned) | extrapolated to v2.2, s |\n"
          "|---|---:|---:|---:|")
    for stage, seconds, factor, full in stage_rows:
        print(f"| {stage} | {seconds:.1f} | {factor:.1f} | {full:.0f} |")
    print(f"| **total** (wall {measured['wall']:.1f} s here) | {sum(r[1] for r in stage_rows):.1f} | | "
          f"**{total_full:.0f} ({total_full / 60:.1f} min)** |")
    scale = V22_ROWS["icustays"] / max(rows["icustays"], 1)
    values_mb = measured["n_stays"] * scale * 48 * measured["n_features"] * 4 / 2**20
    print("\n| DuckDB memory limit | peak RSS of the EHR prep process, MB | wall s |\n|---|---:|---:|")
    for limit, m in ((args.memory_limit, measured), (args.low_memory_limit, low)):
        print(f"| {limit} | {m['peak_mb']:.0f} | {m['wall']:.1f} |")
    print(f"\nDuckDB stays under its limit (spilling to disk beyond it); the rest of the peak is Python: "
          f"the float32 hourly array would be {values_mb:.0f} MB at v2.2 scale "
          f"(~{measured['n_stays'] * scale:,.0f} cohort stays x 48 h x {measured['n_features']} channels).\n")
    print("| image decode (to 256 px, Pillow draft mode, one process per core) | images/s |\n|---|---:|")
    print(f"| synthetic source JPEGs (320-512 px), {len(image_paths)} images | {synthetic_rate:.0f} |")
    print(f"| MIMIC-sized JPEGs ({MIMIC_IMAGE[0]} x {MIMIC_IMAGE[1]} px, 8-bit), {args.images} images | "
          f"{big_rate:.0f} |")


if __name__ == "__main__":
    main()
