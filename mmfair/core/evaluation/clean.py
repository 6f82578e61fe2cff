"""Clean test metrics of finished runs (``eval-missing``'s and ``score``'s reference rows), as tidy rows.

The coverage rule and the undefined-metric rule are those of :mod:`.scoring`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import pandas as pd

from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.cost import cost_rows
from mmfair.core.evaluation.run_folder import load_run_info, predictions_path, read_predictions, selection_rules, subject_ids, task_spec
from mmfair.core.evaluation.scoring import Progress, evaluated_sets, natural_missing_rate, task_rows
from mmfair.core.evaluation.tidy import to_frame


def evaluate_clean(
    run_dirs: Sequence[Path], *, bootstrap: int = 1000, seed: int = 0, progress: Progress = None
) -> pd.DataFrame:
    """Clean test metrics of each run, with patient-level bootstrap intervals.

    Parameters
    ----------
    run_dirs : sequence of Path
        Finished run folders.
    bootstrap : int
        Replicates of the patient-level bootstrap (0: no intervals).
    seed : int
        Bootstrap seed; the same for every run, so runs on one test fold get paired replicates.

    Returns
    -------
    DataFrame in the tidy schema, ``scenario=none``:

    * binary tasks: ``auroc``, ``auprc``, ``brier`` with ``label=all``;
    * phenotypes: the same per label slug and their unweighted mean (macro) as ``label=all``;
    * length of stay: ``accuracy``, ``kappa`` (Cohen's, unweighted), ``kappa_linear`` (linear weights, the
      training selection criterion), ``macro_f1`` on the arg-max class;
    * cost rows ``n_params``, ``train_seconds`` (sum over epochs), ``peak_memory_mb`` (max) where known.

    Two sets of evaluated stays, one row each (``evaluated_on``, ``n`` = their number): ``all`` (every test
    stay; undefined for a method that cannot score them all) and ``with_cxr`` (the test stays with a CXR,
    which every method scores; written when the predictions say which stays have one) — the two fixed
    leaderboards of the report. ``missing_rate`` is the natural share of evaluated test stays without a CXR.

    Every other selection rule of a run (a ``predictions_test_<rule>.csv``, see
    :func:`~.run_folder.selection_rules`) is scored the same way, its rows tagged ``selection=<rule>``; the
    cost rows belong to the default selection only.
    """
    rows: list[dict] = []
    run_dirs = list(run_dirs)
    for i, run_dir in enumerate(run_dirs):
        default_info = load_run_info(run_dir)
        for selection in (None, *selection_rules(run_dir)):
            info = default_info if selection is None else dataclasses.replace(default_info, selection=selection)
            pred = read_predictions(run_dir, "test", selection)
            source = predictions_path(run_dir, "test", selection)
            spec = task_spec(pred, source)
            boot = PatientBootstrap(subject_ids(pred, source), bootstrap, seed)
            names = ("auroc", "auprc", "brier")
            for on, mask in evaluated_sets(pred, source).items():
                base = {**info.row_base(), "missing_rate": natural_missing_rate(pred[mask]), "evaluated_on": on}
                rows += task_rows(pred, spec, mask, boot, base, names)
            if selection is None:
                rows += cost_rows(info)
        if progress:
            progress("clean metrics", i + 1, len(run_dirs))
    return to_frame(rows)

