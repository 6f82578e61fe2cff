"""Everything a report is built from, read once: the tidy results tables and prep's aggregate outputs.

Reports are pure functions of ``results/*.csv``, ``data/*.csv`` (+ ``data/prep.json``) and the finished runs'
stored predictions. The cohort file and the predictions hold one row per stay; only their aggregates (CXR
availability by group; reliability curves and seeded paired bootstrap intervals, :mod:`.predictions`; small
cells suppressed) leave this module, so no renderer ever sees a patient row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from mmfair.core.config import DEFAULT_ATTRIBUTES
from mmfair.core.evaluation.tidy import read_results, to_frame
from mmfair.core.reporting.suppression import complementary, marker
from mmfair.core.workspace import Workspace

#: Groups of the cohort whose CXR availability is reported (columns of ``data/cohort.csv``).
AVAILABILITY_ATTRIBUTES = DEFAULT_ATTRIBUTES


@dataclass
class ReportInputs:
    """The tidy tables (normalised, possibly empty) and prep's aggregates (``None`` when prep never ran)."""

    metrics: pd.DataFrame = field(default_factory=lambda: to_frame([]))
    missing: pd.DataFrame = field(default_factory=lambda: to_frame([]))
    fairness: pd.DataFrame = field(default_factory=lambda: to_frame([]))
    attrition: pd.DataFrame | None = None
    table1: pd.DataFrame | None = None
    availability: pd.DataFrame | None = None
    prep: dict = field(default_factory=dict)
    #: Finished run folders whose predictions the report reads (aggregated by :mod:`.predictions`).
    run_dirs: list[Path] = field(default_factory=list)
    min_group_size: int = 10

    # Computed on first use only (the terminal report needs none of them): aggregates of the runs' predictions.
    @cached_property
    def _runs(self) -> list:
        from mmfair.core.reporting.predictions import load_runs

        return load_runs(self.run_dirs)

    @property
    def fairness_attributes(self) -> list[str]:
        """The attributes eval-fair reported (``has_cxr``, a modality's presence, left out)."""
        values = set(self.fairness["attribute"].astype(str)) if len(self.fairness) else set()
        return sorted(values - {"all", "has_cxr", ""})

    @cached_property
    def reliability(self) -> pd.DataFrame:
        """Per-group reliability curves of the test predictions, small cells dropped."""
        from mmfair.core.reporting.predictions import reliability_curves

        return reliability_curves(self._runs, self.fairness_attributes, self.min_group_size)

    @cached_property
    def best_single(self) -> pd.DataFrame:
        """Each fusion run vs the single-modality run chosen on validation, paired on the same test stays."""
        from mmfair.core.reporting.predictions import fusion_vs_best_single

        return fusion_vs_best_single(self._runs)

    @cached_property
    def addition(self) -> pd.DataFrame:
        """The modality-addition steps with paired bootstrap intervals from the runs' test predictions."""
        from mmfair.core.reporting import views as V
        from mmfair.core.reporting.predictions import addition_intervals

        return addition_intervals(V.addition_steps(self.metrics, self.fairness), self._runs, self.min_group_size)


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() else None


def cxr_availability(cohort: pd.DataFrame, min_group_size: int,
                     attributes=AVAILABILITY_ATTRIBUTES) -> pd.DataFrame:  # fmt: skip
    """Share of stays with a CXR per group of each attribute: columns attribute, group, n, with_cxr, share,
    suppressed. A group with fewer than ``min_group_size`` stays, or with or without a CXR, is suppressed
    (n and share blanked), plus a complementary group where only one would be."""
    out = []
    if "has_cxr" not in cohort.columns:
        return pd.DataFrame(columns=["attribute", "group", "n", "with_cxr", "share", "suppressed"])
    has = pd.to_numeric(cohort["has_cxr"], errors="coerce").fillna(0).astype(int)
    for attribute in [a for a in attributes if a in cohort.columns]:
        counts = pd.DataFrame({"group": cohort[attribute].astype(str), "has": has})
        agg = counts.groupby("group", sort=True)["has"].agg(["size", "sum"]).reset_index()
        n, k = agg["size"].to_numpy(), agg["sum"].to_numpy()
        small = (n < min_group_size) | (k < min_group_size) | ((n - k) < min_group_size)
        hidden = complementary(agg["group"].to_numpy(), n, small)
        for g, ni, ki, h in zip(agg["group"], n, k, hidden):
            out.append({"attribute": attribute, "group": g, "n": np.nan if h else int(ni),
                        "with_cxr": np.nan if h else int(ki), "share": np.nan if h else ki / ni,
                        "suppressed": bool(h)})  # fmt: skip
    return pd.DataFrame(out, columns=["attribute", "group", "n", "with_cxr", "share", "suppressed"])


def suppress_attrition(attrition: pd.DataFrame, min_group_size: int) -> pd.DataFrame:
    """The attrition steps as text, no count between 1 and ``min_group_size − 1`` recoverable.

    Blanking a small ``removed`` alone would not do: it is the difference of two ``kept`` counts shown beside
    it. So a step that removes 1 to k − 1 stays is merged with the next one (``age >= 18; ICU stay >= 48 h``),
    repeatedly, until each shown step removes none or at least k (the last step merges backwards).
    """
    steps = [{"step": str(r["step"]), "kept": int(r["kept"]), "removed": int(r["removed"])}
             for _, r in attrition.iterrows()]  # fmt: skip
    small = lambda s: 0 < s["removed"] < min_group_size  # noqa: E731

    def merge(a: dict, b: dict) -> dict:
        return {"step": f"{a['step']}; {b['step']}", "kept": b["kept"], "removed": a["removed"] + b["removed"]}

    merged: list[dict] = []
    for s in steps:
        merged.append(merge(merged.pop(), s) if merged and small(merged[-1]) and len(merged) > 1 else s)
    while len(merged) > 2 and small(merged[-1]):
        last = merged.pop()
        merged.append(merge(merged.pop(), last))
    total, out = 0, []
    for s in merged:
        total += s["removed"]
        out.append({"step": s["step"], "kept": f"{s['kept']:,}", "removed": f"{s['removed']:,}",
                    "removed_total": f"{total:,}"})  # fmt: skip
    mark = marker(min_group_size)
    for rec, s in zip(out, merged):  # what no merge could hide (a tiny source, a small first removal)
        if 0 < s["kept"] < min_group_size or small(s):
            rec.update(kept=mark, removed=mark, removed_total=mark)
    return pd.DataFrame(out, columns=["step", "kept", "removed", "removed_total"])


def load_inputs(workspace: Workspace, min_group_size: int = 10) -> ReportInputs:
    """Read a workspace's results and prep aggregates (missing files give empty tables / ``None``)."""
    data = workspace.data
    cohort = _csv(workspace.cohort_csv)
    prep_json = data / "prep.json"
    return ReportInputs(
        metrics=read_results(workspace.metrics_csv),
        missing=read_results(workspace.missing_csv),
        fairness=read_results(workspace.fairness_csv),
        attrition=_csv(data / "attrition.csv"),
        table1=_csv(data / "table1.csv"),
        availability=None if cohort is None else cxr_availability(cohort, min_group_size),
        prep=json.loads(prep_json.read_text()) if prep_json.exists() else {},
        run_dirs=workspace.finished_runs(),
        min_group_size=min_group_size,
    )
