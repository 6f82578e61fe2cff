"""Small renderers shared by the commands' closing summaries (the report command has its own)."""

from __future__ import annotations

import math

import pandas as pd
from rich.markup import escape
from rich.table import Table


def fmt_ci(value: float, low: float, high: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if low is None or high is None or any(isinstance(x, float) and math.isnan(x) for x in (low, high)):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def frame_table(df: pd.DataFrame, title: str) -> Table:
    table = Table(title=title)
    for col in df.columns:
        table.add_column(escape(str(col)), justify="right" if pd.api.types.is_numeric_dtype(df[col]) else "left")
    for row in df.itertuples(index=False):
        # labels such as multifair[official-code] would otherwise be read as Rich markup and vanish
        table.add_row(*["n/a" if (isinstance(v, float) and math.isnan(v)) else escape(str(v)) for v in row])
    return table


def metric_summary(rows: pd.DataFrame, metrics=("auroc", "auprc"), by=("method", "task", "fold", "seed")) -> pd.DataFrame:
    """One line per run: the whole-task value of each metric with its CI, undefined shown as n/a."""
    keep = rows[(rows["label"].astype(str) == "all") & (rows["group"].astype(str) == "all") & rows["metric"].isin(metrics)]
    lines = []
    for key, part in keep.groupby(list(by) + ["run_id"], sort=True, dropna=False):
        line = dict(zip(list(by) + ["run_id"], key))
        line["run_id"] = str(line["run_id"])
        line["n"] = ""
        for m in metrics:
            hit = part[part["metric"] == m]
            if hit.empty:
                line[m] = "n/a"
                continue
            r = hit.iloc[0]
            defined = str(r.get("defined", True)).lower() not in ("false", "0")
            line[m] = fmt_ci(float(r["value"]), float(r["ci_low"]), float(r["ci_high"])) if defined else "n/a"
            line["n"] = int(r["n"]) if pd.notna(r.get("n")) else ""
        lines.append(line)
    return pd.DataFrame(lines)
