"""Load a workspace's results with the library and make one custom figure.

    python examples/python_api.py [WORKSPACE] [OUT.png]

Reads results/*.csv through the tidy reader (the same the report uses) and plots test AUROC against the
share of test stays whose CXR was removed (MCAR), one line per method, with its 95 % bootstrap band.
"""

from __future__ import annotations

import sys
from pathlib import Path

from matplotlib.figure import Figure

from mmfair.core.evaluation.tidy import read_results
from mmfair.core.reporting.figures import PALETTE
from mmfair.core.workspace import Workspace


def main(workspace: str = "mmfair-workspace", out: str = "auroc_vs_missing.png") -> Path:
    ws = Workspace.resolve(workspace)
    missing = read_results(ws.missing_csv)  # an empty table when eval-missing has not run
    rows = missing[(missing["scenario"] == "mcar") & (missing["metric"] == "auroc") & (missing["label"] == "all")
                   & (missing["attribute"] == "all") & missing["defined"]]
    curves = rows.groupby(["method", "missing_rate"], as_index=False)[["value", "ci_low", "ci_high"]].mean()
    fig = Figure(figsize=(3.5, 2.6), layout="constrained")
    ax = fig.add_subplot()
    for colour, (method, line) in zip(PALETTE * 4, curves.groupby("method")):
        ax.plot(line["missing_rate"], line["value"], marker="o", color=colour, label=method)
        ax.fill_between(line["missing_rate"], line["ci_low"], line["ci_high"], color=colour, alpha=0.15)
    ax.set_xlabel("share of CXRs removed (MCAR)")
    ax.set_ylabel("test AUROC")
    ax.legend(frameon=False, fontsize=7)
    fig.savefig(out, dpi=200)
    print(f"{len(curves)} points of {curves['method'].nunique()} methods → {out}")
    return Path(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
