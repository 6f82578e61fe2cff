"""Time and peak memory of the EHR part of `prep` on a scaled synthetic tree, extrapolated to MIMIC-IV
v2.2's row counts; the image decode rate; and the CXR encoder stage.

    .venv/bin/python bench/prep_scale.py [--n-stays 10000] [--chart-volume mimic] [--memory-limit 6GB]
                                         [--variables standard] [--images 400] [--encoder-budget 120]
                                         [--encoder-subjects 300] [--out bench/out/prep-scale]

1. Generates (or reuses) the synthetic MIMIC-IV v2.2 tree with `--n-stays` cohort stays under
   `<out>/source-<n>-<volume>` (the same generator as `mmfair prep`) in a child process, and reports its
   time, rows/s and peak memory. `--chart-volume mimic` (the default here) gives the tree MIMIC's rows
   per ICU stay and itemid mix (about 4,300 chartevents and 1,600 labevents rows per stay, most of them
   itemids prep filters out), so the extrapolation below rests on MIMIC's row volume per stay;
   `compact` writes only the rows prep reads (10x fewer; the demo's tree).
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
6. Unless `--encoder-budget 0`: runs the whole prep with the CXR root and the encoder stage (default
   encoder, `--encoder-budget` seconds) in a child process, and reports the images and encoder stages:
   the encoder decodes the non-cohort training images (at most `encoder_max_images`), then trains and
   embeds the cohort's paired images within the time budget.

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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_config(args: argparse.Namespace):
    from mmfair.core.config import SyntheticConfig

    return SyntheticConfig(n_stays=args.n_stays, n_encoder_subjects=args.encoder_subjects,
                           chart_volume=args.chart_volume)


def generate_child(args: argparse.Namespace) -> None:
    """Generate (or reuse) the tree and print its seconds, peak RSS and whether it was reused as JSON."""
    from mmfair.core.synthetic import generate_source

    tree = args.out / f"source-{args.n_stays}-{args.chart_volume}"
    done = tree / "ground_truth" / "DONE"
    before = done.stat().st_mtime_ns if done.is_file() else None
    clock = time.perf_counter()
    src = generate_source(synthetic_config(args), tree)
    seconds = time.perf_counter() - clock
    reused = before is not None and done.stat().st_mtime_ns == before
    stages = json.loads(done.read_text()).get("seconds", {})
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "reused": reused, "stages": stages,
                      "mimic_root": str(src.mimic_root), "cxr_root": str(src.cxr_root)}))


def child(args: argparse.Namespace) -> None:
    """Run prep (the EHR part, or everything with `--with-encoder`); print stage seconds and peak RSS as JSON."""
    import h5py

    from mmfair.core.config import PrepConfig
    from mmfair.core.data.prep import run_prep
    from mmfair.core.data.variables import load_variable_map
    from mmfair.core.workspace import Workspace

    encoder = None
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        if args.with_encoder:
            config = PrepConfig(mimic_root=args.mimic_root, cxr_root=args.cxr_root, variables=args.variables,
                                memory_limit=args.memory_limit, source_label="synthetic",
                                encoder_time_budget_s=args.encoder_budget)
        else:
            config = PrepConfig(mimic_root=args.mimic_root, cxr_root=None, skip_encoder=True,
                                variables=args.variables, memory_limit=args.memory_limit, source_label="synthetic")
        workspace = Workspace.resolve(Path(tmp) / "ws")
        clock = time.perf_counter()
        result = run_prep(config, workspace)
        wall = time.perf_counter() - clock
        if args.with_encoder and result.encoder:
            with h5py.File(workspace.features_h5, "r") as store:
                embeddings = store[f"cxr/embeddings/{result.encoder['encoder_id']}"]
                encoder = {key: (v.item() if hasattr(v, "item") else v) for key, v in embeddings.attrs.items()
                           if key in ("n_available_images", "epochs_run", "stopped_by", "train_images_per_s",
                                      "seconds", "time_budget_s", "random_init", "model")}
                encoder["n_embedded"] = int(embeddings.shape[0])
                encoder["id"] = result.encoder["encoder_id"]
                encoder = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in encoder.items()}
    print(json.dumps({"wall": wall, "stages": result.stage_seconds, "n_stays": result.n_stays,
                      "n_with_cxr": result.n_with_cxr, "peak_mb": peak_rss_mb(), "encoder": encoder,
                      "n_features": len(load_variable_map(args.variables).names)}, default=str))


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
    parser.add_argument("--chart-volume", choices=("mimic", "compact"), default="mimic",
                        help="mimic: MIMIC's rows per stay and itemid mix (default); compact: only the rows prep reads")
    parser.add_argument("--memory-limit", default="6GB")
    parser.add_argument("--low-memory-limit", default="512MB", help="a second run under this DuckDB limit")
    parser.add_argument("--variables", default="standard")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--encoder-budget", type=float, default=120.0,
                        help="encoder_time_budget_s of the encoder run (PrepConfig's default); 0 skips that run")
    parser.add_argument("--encoder-subjects", type=int, default=300,
                        help="non-cohort CXR subjects in the tree (the encoder's training images)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/prep-scale"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--with-encoder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mimic-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cxr-root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.generate:
        generate_child(args)
        return
    if args.child:
        child(args)
        return

    def run(*extra: str) -> dict:
        cmd = [sys.executable, __file__, "--out", str(args.out), "--n-stays", str(args.n_stays),
               "--chart-volume", args.chart_volume, "--encoder-subjects", str(args.encoder_subjects),
               "--variables", args.variables, "--encoder-budget", str(args.encoder_budget), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    generated = run("--generate")
    mimic_root, cxr_root = generated["mimic_root"], generated["cxr_root"]
    rows = count_rows(Path(mimic_root))

    def run_child(limit: str, *extra: str) -> dict:
        return run("--child", "--mimic-root", mimic_root, "--memory-limit", limit, *extra)

    measured = run_child(args.memory_limit)
    low = run_child(args.low_memory_limit)
    with_encoder = (run_child(args.memory_limit, "--with-encoder", "--cxr-root", cxr_root)
                    if args.encoder_budget > 0 else None)

    image_paths = sorted((Path(cxr_root) / "files").rglob("*.jpg"))[: args.images]
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
    icu_stays = max(rows["icustays"], 1)
    print(f"machine: {cores} cores, {platform.machine()}, Python {platform.python_version()}; "
          f"synthetic tree of {args.n_stays:,} cohort stays ({rows['icustays']:,} ICU stays), chart volume "
          f"{args.chart_volume}; DuckDB memory limit {args.memory_limit}; variables {args.variables}\n")
    event_rows = rows["chartevents"] + rows["labevents"] + rows["outputevents"]
    if generated["reused"]:
        print("synthetic tree: reused (generated by an earlier run; delete it to time the generator)\n")
    else:
        stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in generated["stages"].items())
        print(f"synthetic tree: generated in {generated['seconds']:.0f} s, {event_rows / generated['seconds']:,.0f} "
              f"event rows/s overall (stages: {stages}), peak RSS {generated['peak_mb']:,.0f} MB\n")
    print("| table | rows here | per ICU stay here | rows in v2.2 | per ICU stay in v2.2 | factor |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name in TABLES:
        print(f"| {name} | {rows[name]:,} | {rows[name] / icu_stays:,.1f} | {V22_ROWS[name]:,} | "
              f"{V22_ROWS[name] / V22_ROWS['icustays']:,.1f} | {V22_ROWS[name] / max(rows[name], 1):.1f} |")
    print("\n| EHR prep stage | seconds here | scale factor (rows scanned) | extrapolated to v2.2, s |\n"
          "|---|---:|---:|---:|")
    for stage, seconds, factor, full in stage_rows:
        print(f"| {stage} | {seconds:.1f} | {factor:.1f} | {full:.0f} |")
    print(f"| **total** (wall {measured['wall']:.1f} s here) | {sum(r[1] for r in stage_rows):.1f} | | "
          f"**{total_full:.0f} ({total_full / 60:.1f} min)** |")
    scale = V22_ROWS["icustays"] / icu_stays
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
    if with_encoder is None:
        return
    stages = with_encoder["stages"]
    enc = with_encoder.get("encoder") or {}
    print(f"\n| full prep with the CXR root (encoder budget {args.encoder_budget:.0f} s) | seconds |\n|---|---:|")
    for stage, seconds in stages.items():
        print(f"| {stage} | {seconds:.1f} |")
    print(f"| wall (peak RSS {with_encoder['peak_mb']:,.0f} MB) | {with_encoder['wall']:.1f} |")
    if enc:
        fit = float(enc.get("seconds", 0.0))
        print(f"\nencoder {enc.get('id')}: {enc.get('n_available_images')} non-cohort training images decoded, "
              f"then training and embedding {enc.get('n_embedded')} paired cohort images took {fit:.1f} s "
              f"(budget {enc.get('time_budget_s')} s; {enc.get('epochs_run')} epochs, stopped by "
              f"{enc.get('stopped_by')}, {float(enc.get('train_images_per_s', 0)):.0f} training images/s); "
              f"decoding the training images and writing took the other "
              f"{stages.get('encoder', 0.0) - fit:.1f} s of the stage.")
    else:
        print("\nencoder: no embeddings written (no paired cohort images?)")


if __name__ == "__main__":
    main()
