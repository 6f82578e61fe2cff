"""Figures of the report: one function per figure, each from a frame of :mod:`.views` to a matplotlib
``Figure`` (``None`` when there is nothing to draw).

Pyplot is never imported: figures are plain ``matplotlib.figure.Figure`` objects drawn by the Agg canvas, so
no display or global backend state is involved. Sized for a paper column (3.5 in wide; 7 in for the
multi-panel ones) with 8 pt text; colours from the Okabe–Ito palette (colour-blind safe) and a marker per
series, so a grey-scale print still separates them. Suppressed groups never reach here (:mod:`.views`
drops them), and text stays text in SVG output (``svg.fonttype: none``), so a figure can be searched.
"""

from __future__ import annotations

import io
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: Okabe & Ito (2008), without yellow (too light on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
COLUMN = 3.5
DOUBLE = 7.0
#: ``svg.hashsalt``: the same SVG element ids on every run, so the page is a pure function of the results.
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False,
         "pdf.fonttype": 42, "svg.hashsalt": "mmfair"}  # fmt: skip


def _styles(names) -> dict[str, tuple[str, str]]:
    return {n: (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]) for i, n in enumerate(sorted(set(names)))}


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def _err(value, lo, hi) -> np.ndarray:
    value, lo, hi = (np.asarray(x, dtype=float) for x in (value, lo, hi))
    low = np.where(np.isfinite(lo), value - lo, 0.0)
    high = np.where(np.isfinite(hi), hi - value, 0.0)
    return np.vstack([np.clip(low, 0, None), np.clip(high, 0, None)])


def _draw(fn: Callable) -> Callable:
    """Run a figure function under the report's style (rcParams apply when artists are created)."""

    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@_draw
def fusion_forest(comparisons: pd.DataFrame) -> Figure | None:
    """Forest plot of paired AUROC differences (fusion − single modality, or method − reference) with their
    95 % paired bootstrap intervals; a dashed line at 0."""
    if len(comparisons) == 0:
        return None
    df = comparisons.reset_index(drop=True)
    labels = [f"{r.fusion} − {r.other}" + ("" if r.label == "all" else f" · {r.label}") + f" ({r.task})"
              for r in df.itertuples()]  # fmt: skip
    fig = _figure(COLUMN, 0.6 + 0.22 * len(df))
    ax = fig.add_subplot()
    y = np.arange(len(df))[::-1]
    colours = [PALETTE[0] if k == "vs single" else PALETTE[1] for k in df["kind"]]
    for yi, (_, r), c in zip(y, df.iterrows(), colours):
        ax.errorbar(r["diff"], yi, xerr=_err([r["diff"]], [r["lo"]], [r["hi"]]), fmt="o", color=c, ms=4, capsize=2)
    ax.axvline(0, color="grey", ls="--", lw=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlabel("AUROC difference [95% CI]")
    return fig


@_draw
def leaderboard(board: pd.DataFrame) -> Figure | None:
    """Clean test AUROC with 95 % intervals per method, one panel per task (best on top)."""
    if len(board) == 0:
        return None
    tasks = list(dict.fromkeys(board["task"]))
    height = 0.5 + 0.22 * board.groupby("task").size().max()
    fig = _figure(COLUMN * min(len(tasks), 2), height * ((len(tasks) + 1) // 2))
    styles = _styles(board["method"])
    for i, task in enumerate(tasks):
        ax = fig.add_subplot((len(tasks) + 1) // 2, min(len(tasks), 2), i + 1)
        part = board[board["task"] == task].reset_index(drop=True)
        y = np.arange(len(part))[::-1]
        for yi, (_, r) in zip(y, part.iterrows()):
            colour, marker = styles[r["method"]]
            ax.errorbar(r["value"], yi, xerr=_err([r["value"]], [r["lo"]], [r["hi"]]), fmt=marker, color=colour,
                        ms=4, capsize=2)  # fmt: skip
        ax.set_yticks(y, part["method"])
        ax.set_title(task)
        ax.set_xlabel("AUROC [95% CI]")
    return fig


@_draw
def cd_diagram(ranks: pd.Series, cd: float, n_blocks: int) -> Figure:
    """Critical-difference diagram (Demšar 2006): mean ranks on an axis, the Nemenyi CD as a bar, and thick
    lines joining methods whose mean ranks differ by less than the CD."""
    k = len(ranks)
    fig = _figure(COLUMN, 0.9 + 0.16 * k)
    ax = fig.add_subplot()
    ax.set_xlim(k + 0.3, 0.7)  # rank 1 (best) on the right, as in Demšar
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", lw=0.8)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="black", lw=0.8)
        ax.text(r, 0.25, str(r), ha="center", va="bottom")
    ax.hlines(0.9, 1, 1 + cd, color="black", lw=1.2)
    ax.text(1 + cd / 2, 1.0, f"CD = {cd:.2f} ({n_blocks} blocks)", ha="center", va="bottom")
    items = list(ranks.items())
    values = [r for _, r in items]
    cliques = []  # maximal runs of methods whose mean ranks differ by less than the CD
    for i in range(k):
        j = max(j for j in range(i, k) if values[j] - values[i] < cd)
        if j > i and not any(a <= i and j <= b for a, b in cliques):
            cliques.append((i, j))
    for c, (i, j) in enumerate(cliques):
        ax.hlines(-0.2 - 0.15 * c, values[i] - 0.03, values[j] + 0.03, color=PALETTE[5], lw=2.5)
    top = -0.35 - 0.15 * len(cliques)
    half = (k + 1) // 2
    for i, (method, rank) in enumerate(items):
        right = i < half  # the better half is labelled on the right (rank 1 is drawn on the right)
        yy = top - (i if right else k - 1 - i) * 0.4
        xt = 0.8 if right else k + 0.2
        ax.plot([rank, rank, xt], [0, yy, yy], color="black", lw=0.6)
        ax.text(xt, yy, f" {method} ({rank:.2f}) ", ha="left" if right else "right", va="center")
    ax.set_ylim(top - half * 0.4 - 0.2, 1.3)
    return fig


def _curve_axes(fig: Figure, panels: list, ncols: int = 2):
    nrows = (len(panels) + ncols - 1) // ncols
    return [fig.add_subplot(nrows, min(ncols, len(panels)), i + 1) for i in range(len(panels))]


@_draw
def missing_curves(curves: pd.DataFrame, metric: str = "auroc", ylabel: str | None = None) -> Figure | None:
    """Metric vs realised missing rate, one line per method with its 95 % band, one panel per mechanism
    (for the gap curves: per mechanism × attribute)."""
    df = curves[curves["metric"] == metric]
    if len(df) == 0:
        return None
    df = df.assign(panel=[m if a == "all" else f"{m} · {a}" for m, a in zip(df["mechanism"], df["attribute"])])
    panels = list(dict.fromkeys(sorted(df["panel"])))[:6]
    ncols = min(2, len(panels))
    fig = _figure(COLUMN * ncols, 2.3 * ((len(panels) + ncols - 1) // ncols))
    styles = _styles(df["method"])
    for ax, panel in zip(_curve_axes(fig, panels, ncols), panels):
        part = df[df["panel"] == panel]
        for method, line in part.groupby("method", sort=True):
            line = line.sort_values("x")
            colour, marker = styles[method]
            ax.plot(line["x"], line["value"], marker=marker, color=colour, ms=3, lw=1, label=method)
            ax.fill_between(line["x"], line["lo"], line["hi"], color=colour, alpha=0.12, lw=0)
        ax.set_title(panel)
        ax.set_xlabel("missing rate")
        ax.set_ylabel(ylabel or metric.upper())
    _legend_below(fig, len(styles))
    return fig


def _legend_below(fig: Figure, n: int) -> None:
    handles, labels = fig.axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))  # one entry per series, even when several panels drew it
    fig.legend(seen.values(), seen.keys(), loc="outside lower center", ncols=min(n, 3), frameon=False)


@_draw
def group_forest(estimates: pd.DataFrame) -> Figure | None:
    """Per-group AUROC, TPR and FPR with 95 % intervals (one panel each), one marker per method; suppressed
    groups are absent."""
    metrics = [m for m in ("auroc", "tpr", "fpr") if m in set(estimates["metric"])]
    if not metrics:
        return None
    rows = estimates[["attribute", "group"]].drop_duplicates().sort_values(["attribute", "group"])
    keys = list(map(tuple, rows.to_numpy()))
    methods = sorted(set(estimates["method"]))
    styles = _styles(methods)
    fig = _figure(DOUBLE, 0.7 + 0.2 * len(keys) * max(1, len(methods)) ** 0.5)
    y_of = {k: len(keys) - 1 - i for i, k in enumerate(keys)}
    step = 0.7 / max(len(methods), 1)
    for j, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), j + 1, sharey=fig.axes[0] if j else None)
        for i, method in enumerate(methods):
            part = estimates[(estimates["metric"] == metric) & (estimates["method"] == method)]
            y = np.array([y_of[(a, g)] for a, g in zip(part["attribute"], part["group"])]) + 0.35 - (i + 0.5) * step
            colour, marker = styles[method]
            ax.errorbar(part["value"], y, xerr=_err(part["value"], part["lo"], part["hi"]), fmt=marker, color=colour,
                        ms=3, capsize=1.5, lw=0.8, label=method if j == 0 else None)  # fmt: skip
        ax.set_title(metric.upper())
        if j == 0:
            ax.set_yticks([y_of[k] for k in keys], [f"{a}: {g}" for a, g in keys])
        else:
            ax.tick_params(labelleft=False)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(methods), 4),
               frameon=False)  # fmt: skip
    return fig


@_draw
def fairness_scatter(points: pd.DataFrame, gap_label: str = "equalized-odds gap") -> Figure | None:
    """AUROC vs a fairness gap per method, one panel per attribute, the Pareto front (higher AUROC, smaller
    gap) as a step line. It describes test results; it is not a selection."""
    if len(points) == 0:
        return None
    attributes = sorted(set(points["attribute"]))[:4]
    ncols = min(2, len(attributes))
    fig = _figure(COLUMN * ncols, 2.3 * ((len(attributes) + ncols - 1) // ncols))
    styles = _styles(points["method"])
    for ax, attribute in zip(_curve_axes(fig, attributes, ncols), attributes):
        part = points[points["attribute"] == attribute]
        for _, r in part.iterrows():
            colour, marker = styles[r["method"]]
            ax.scatter(r["gap"], r["auroc"], color=colour, marker=marker, s=18, label=r["method"],
                       edgecolors="black" if r["pareto"] else "none", linewidths=0.6)  # fmt: skip
        front = part[part["pareto"]].sort_values("gap")
        ax.step(front["gap"], front["auroc"], where="post", color="grey", lw=0.8, ls="--")
        ax.set_title(attribute)
        ax.set_xlabel(f"{gap_label} (lower is fairer)")
        ax.set_ylabel("AUROC")
    _legend_below(fig, len(styles))
    return fig


@_draw
def reliability(curves: pd.DataFrame) -> Figure | None:
    """Per-group reliability diagrams of one task: observed share of positives vs mean predicted risk per
    equal-width bin, one panel per method × attribute, one line per group; suppressed groups and bins are
    absent (:mod:`.predictions`)."""
    if len(curves) == 0:
        return None
    panels = list(dict.fromkeys(zip(curves["method"], curves["attribute"])))
    ncols = min(4, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    fig = _figure(max(COLUMN, 1.75 * ncols), 0.5 + 1.75 * nrows)
    styles = _styles(curves["group"])
    for i, (method, attribute) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.6)
        part = curves[(curves["method"] == method) & (curves["attribute"] == attribute)]
        for group, line in part.groupby("group", sort=True):
            colour, marker = styles[group]
            ax.plot(line["mean_score"], line["observed"], marker=marker, color=colour, ms=3, lw=1, label=group)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{method} · {attribute}")
        ax.set_xlabel("mean predicted risk")
        ax.set_ylabel("observed share" if i % ncols == 0 else "")
    handles = {}
    for ax in fig.axes:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    names = sorted(handles)
    fig.legend([handles[n] for n in names], names, loc="outside lower center", ncols=min(len(names), 6), frameon=False)
    return fig


@_draw
def shapley_bars(values: pd.DataFrame) -> Figure | None:
    """Modality Shapley values (φ, AUROC units) with 95 % intervals: overall and per group, one panel per
    method, one bar per modality."""
    if len(values) == 0:
        return None
    methods = sorted(set(values["method"]))[:4]
    players = sorted(set(values["player"]))
    styles = _styles(players)
    keys = values[["attribute", "group"]].drop_duplicates()
    keys = sorted(map(tuple, keys.to_numpy()), key=lambda k: (k[0] != "all", k))
    fig = _figure(COLUMN * min(len(methods), 2), 0.8 + 0.22 * len(keys) * len(players) ** 0.5)
    height = 0.8 / len(players)
    for m_i, method in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), m_i + 1)
        for p_i, player in enumerate(players):
            part = values[(values["method"] == method) & (values["player"] == player)]
            pos = {k: len(keys) - 1 - i for i, k in enumerate(keys)}
            y = np.array([pos[(a, g)] for a, g in zip(part["attribute"], part["group"])]) + 0.4 - (p_i + 0.5) * height
            ax.barh(y, part["value"], height=height, xerr=_err(part["value"], part["lo"], part["hi"]),
                    color=styles[player][0], label=f"φ {player}", error_kw={"lw": 0.6, "capsize": 1})  # fmt: skip
        ax.set_yticks(range(len(keys))[::-1], ["overall" if a == "all" else f"{a}: {g}" for a, g in keys]
                      if m_i == 0 else [""] * len(keys))  # fmt: skip
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_title(method)
        ax.set_xlabel("φ (AUROC)")
    _legend_below(fig, len(players))
    return fig


@_draw
def attrition_flow(attrition: pd.DataFrame) -> Figure | None:
    """The cohort's attrition steps as a flow of boxes (stays kept) with the stays removed beside each arrow;
    counts come already suppressed (text)."""
    if attrition is None or len(attrition) == 0:
        return None
    steps = attrition.reset_index(drop=True)
    fig = _figure(COLUMN, 0.5 + 0.55 * len(steps))
    fig.set_layout_engine("none")  # the boxes are text, not axes: constrained layout would collapse the axes
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, 1)
    ax.set_ylim(-len(steps) + 0.4, 0.6)
    ax.axis("off")
    box = {"boxstyle": "round,pad=0.3", "fc": "#E8F1F8", "ec": PALETTE[0], "lw": 0.8}
    for i, r in steps.iterrows():
        ax.text(0.35, -i, f"{r['step']}\n{r['kept']} stays", ha="center", va="center", bbox=box, fontsize=7)
        if i:
            ax.annotate("", xy=(0.35, -i + 0.28), xytext=(0.35, -i + 0.72), arrowprops={"arrowstyle": "->", "lw": 0.8})
            ax.text(0.75, -i + 0.5, f"− {r['removed']}", ha="left", va="center", fontsize=7, color=PALETTE[5])
    return fig


@_draw
def cxr_availability(availability: pd.DataFrame) -> Figure | None:
    """Share of stays with a CXR per group (the structured missingness itself), one panel per attribute;
    suppressed groups are absent."""
    shown = availability[~availability["suppressed"]] if availability is not None and len(availability) else None
    if shown is None or len(shown) == 0:
        return None
    attributes = list(dict.fromkeys(shown["attribute"]))
    ncols = min(2, len(attributes))
    fig = _figure(COLUMN * ncols, 1.6 * ((len(attributes) + ncols - 1) // ncols))
    for ax, attribute in zip(_curve_axes(fig, attributes, ncols), attributes):
        part = shown[shown["attribute"] == attribute]
        ax.barh(part["group"].astype(str), part["share"], color=PALETTE[2])
        ax.set_xlim(0, 1)
        ax.set_title(attribute)
        ax.set_xlabel("share of stays with a CXR")
    return fig


def to_svg(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element (text kept as text; no XML prolog)."""
    buf = io.StringIO()
    with matplotlib.rc_context(STYLE):
        # no creation date: the page is a pure function of the results (and a timestamp's digits never pass
        # for a suppressed count)
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def save(fig: Figure, stem) -> list:
    """Write ``stem.png`` (300 dpi) and ``stem.pdf``; returns the paths."""
    from pathlib import Path

    from mmfair.core.io import atomic_path

    paths = []
    for ext, kw in (("png", {"dpi": 300}), ("pdf", {})):
        path = Path(f"{stem}.{ext}")
        with atomic_path(path) as tmp, matplotlib.rc_context(STYLE):
            fig.savefig(tmp, format=ext, bbox_inches="tight", **kw)
        paths.append(path)
    return paths
