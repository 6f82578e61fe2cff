"""Cost rows of the tidy table: what a run cost to train and what it costs to use.

One row per metric per run (``label=all``, ``attribute=all``, ``selection`` the run's default, ``test_cohort``
``full`` — a cost belongs to the model, not to an evaluation cohort):

* ``n_params``: trainable and frozen parameters of the fused model (``config.json``; else counted in
  ``model.pt``);
* ``train_seconds``: wall-clock seconds of training, summed over the epochs of ``history.csv``;
* ``peak_memory_mb``: the largest per-epoch peak memory in ``history.csv`` (GPU memory on CUDA, the
  process's resident set on CPU, as the trainer records it);
* ``infer_stays_per_s``: test stays scored per second by ``predict_fn`` (model loading excluded: one
  untimed call first, then the best of ``repeats`` timed calls, since a busy machine only ever slows a
  call down).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pandas as pd

from mmfair.core.evaluation.run_folder import RunInfo, cost_values, load_run_info, predictions_path
from mmfair.core.evaluation.tidy import make_row, to_frame

COST_METRICS = ("n_params", "train_seconds", "peak_memory_mb", "infer_stays_per_s")


def count_parameters(model_file: Path) -> int | None:
    """Number of values in the tensors of a saved state dict (``None`` if the file is absent)."""
    if not Path(model_file).exists():
        return None
    import torch

    state = torch.load(model_file, map_location="cpu", weights_only=True)
    return int(sum(t.numel() for t in state.values() if hasattr(t, "numel")))


def time_inference(run_dir: Path, predict_fn: Callable, *, split: str = "test", repeats: int = 2) -> float:
    """Stays per second of ``predict_fn(run_dir, split, {})`` on the whole split, after one warm-up call."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    out = predict_fn(Path(run_dir), split, {})  # loads the model and warms caches: not timed
    n = len(out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict_fn(Path(run_dir), split, {})
        best = min(best, time.perf_counter() - start)
    return n / best if best > 0 else float("nan")


def cost_rows(info: RunInfo, infer_stays_per_s: float | None = None) -> list[dict]:
    """The cost rows of one run (see the module docstring); metrics that are unknown are left out."""
    values = cost_values(info)
    if "n_params" not in values:
        counted = count_parameters(info.run_dir / "model.pt")
        if counted is not None:
            values["n_params"] = float(counted)
    if infer_stays_per_s is not None:
        values["infer_stays_per_s"] = float(infer_stays_per_s)
    base = {**info.row_base(), "test_cohort": "full", "selection": "overall"}
    return [make_row(**base, metric=m, value=values[m], defined=True) for m in COST_METRICS if m in values]


def evaluate_cost(run_dirs, predict_fn: Callable | None = None, *, repeats: int = 2) -> pd.DataFrame:
    """Cost rows of each run; with ``predict_fn`` also the timed inference rate on its test split."""
    rows: list[dict] = []
    for run_dir in run_dirs:
        info = load_run_info(run_dir)
        rate = None
        if predict_fn is not None and predictions_path(run_dir, "test").exists():
            rate = time_inference(run_dir, predict_fn, repeats=repeats)
        rows += cost_rows(info, rate)
    return to_frame(rows)
