"""Modality Shapley values from modality-subset runs (HAIM's definition, ``anchors_tier2.md`` §4, §9).

Players are the modalities ``N`` of a fusion run (two or more, e.g. ``ehr+cxr``, or ``ehr+cxr+static`` when the
static modality is on: every non-empty subset of {ehr, cxr, static} has a run — ``train --modalities static``
is the ``ehr`` method on the static channels alone, ``cxr,static`` the fusion with the static channels as its
non-image branch; DESIGN's architecture notes). The value of a subset
``S`` is the test AUROC of the run trained on exactly ``S`` (``config.json`` ``modalities``), and

    φ_i = Σ_{S ⊆ N∖{i}} |S|! (n − |S| − 1)! / n! · (v(S ∪ {i}) − v(S)),

so that Σ_i φ_i = v(N) − v(∅) (efficiency). **v(∅) = 0.5**, the AUROC of a model that knows nothing
(an intercept-only model ranks every stay equally).

Which runs. For each fusion run F (method m, modalities N, task, fold, seed, test cohort), each
non-empty proper subset S of N takes the finished run with modalities exactly S on the same task, fold,
seed, test cohort and split — among those, the runs with F's train-time missingness (``train_missing``)
if any, else those trained without; preferring method m, then the single-modality method of that name
(``ehr``, ``cxr``; ``ehr`` for ``static``, whose branch it is); several candidates: the first by run id
(logged). F itself is v(N). Without every subset the fusion run gets no Shapley rows (logged).

On which stays. All subsets are scored on the **same stays**: the test stays that have every modality
of N (``present_<m> = 1``) and that every subset run scored — otherwise v would compare different
populations (a CXR-only model cannot score a stay without a CXR); the rows say so with
``evaluated_on=with_cxr`` when the CXR is a player. Per group (``attributes``), the same on the group's
stays; a group with one class has undefined values, and so has a group that the small-cell rule
suppresses (``n``, ``n_pos`` or ``n − n_pos`` below ``min_group_size``, plus the complementary group of
its attribute and label, :func:`~mmfair.core.reporting.suppression.suppress_block`): its Shapley values are
written ``defined=false`` with an empty value, so no table can show or summarise them.

Intervals: the one patient-level bootstrap (seed ``seed``) on those stays; every subset's AUROC is
computed on the same replicates, so φ's replicates are the same linear combination and the interval is
paired. Phenotypes: per label, and ``label=all`` as the mean φ over the labels where every subset is
defined (φ is linear in v, so this is φ of the macro AUROC). Length of stay (no AUROC) is skipped.

Rows (tidy schema): ``metric=shapley``, ``modalities`` = the player, ``run_id``/``method``/``fold``/
``seed`` of the fusion run, ``scenario=none``, ``missing_rate=0`` (every evaluated stay has every
modality), ``scenario_params`` JSON with ``players``, ``v_empty``, ``of`` (auroc), ``subset_runs`` and
``v`` (the value of each subset, ``+``-joined, on these stays); ``attribute``/``group`` as for fairness
rows (``all``/``all`` overall) with the group's ``n``/``n_pos`` so the small-cell rule applies.
"""

from __future__ import annotations

import json
import logging
from itertools import combinations
from math import factorial
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mmfair.core.config import DEFAULT_ATTRIBUTES
from mmfair.core.errors import InputFileError, MmfairError
from mmfair.core.evaluation import metrics as M
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.run_folder import (
    RunInfo,
    load_run_info,
    predictions_path,
    presence,
    read_predictions,
    subject_ids,
    task_spec,
)
from mmfair.core.evaluation.scenarios import level_text
from mmfair.core.evaluation.tidy import make_row, normalise, rewrite_results, to_frame

log = logging.getLogger(__name__)

#: v(∅): the AUROC of a model with no modality (ranks every stay alike).
V_EMPTY = 0.5
_ORDER = ("ehr", "cxr", "static")
#: The single-modality method of a one-player subset (``static`` alone is the ``ehr`` method on the static channels).
_UNIMODAL = {"ehr": "ehr", "cxr": "cxr", "static": "ehr"}
_MISALIGNED = "{0} and {1} hold different test stays; subset runs of one fold must share predictions rows"


def _sorted_players(players: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(players), key=lambda m: (_ORDER.index(m) if m in _ORDER else len(_ORDER), m)))


def _name(subset: Iterable[str]) -> str:
    return "+".join(_sorted_players(subset))


def shapley_values(value: Mapping[frozenset, object], players: Sequence[str], v_empty: object = V_EMPTY) -> dict[str, object]:
    """Exact Shapley values of ``players`` for the characteristic function ``value`` (subset → float or array).

    ``value`` must hold every non-empty subset of ``players`` (as frozensets); ``v_empty`` is v(∅).
    Arrays (bootstrap replicates) are combined element-wise.
    """
    players = list(players)
    n = len(players)
    out: dict[str, object] = {}
    for i in players:
        rest = [p for p in players if p != i]
        total: object = 0.0
        for k in range(len(rest) + 1):
            weight = factorial(k) * factorial(n - k - 1) / factorial(n)
            for combo in combinations(rest, k):
                s = frozenset(combo)
                v_s = v_empty if not s else value[s]
                total = total + weight * (np.asarray(value[s | {i}]) - np.asarray(v_s))
        out[i] = total
    return out


def _protocol(info: RunInfo) -> str:
    return getattr(info, "train_missing", None) or "none"


def _pick(candidates: list[RunInfo], method: str, subset: tuple[str, ...], full: RunInfo) -> RunInfo | None:
    if not candidates:
        return None
    # like with like: subset runs trained with the fusion run's train-time missingness, else without any
    for protocol in dict.fromkeys((_protocol(full), "none")):
        matching = [c for c in candidates if _protocol(c) == protocol]
        if matching:
            candidates = matching
            break
    same = [c for c in candidates if c.method == method]
    named = [c for c in candidates if len(subset) == 1 and c.method == _UNIMODAL.get(subset[0], subset[0])]
    pool = sorted(same or named or candidates, key=lambda c: c.run_id)
    if len(pool) > 1:
        log.warning("%s: %d runs with modalities %s; using %s", full.run_id, len(pool), _name(subset), pool[0].run_id)
    return pool[0]


def _values(y, scores: dict[frozenset, np.ndarray], mask, boot: PatientBootstrap):
    vals, reps = {}, {}
    for s, sc in scores.items():
        vals[s] = M.auroc(y[mask], sc[mask]) if mask.any() else float("nan")
        reps[s] = M.auroc(y[mask], sc[mask], boot.weights[:, mask]) if boot.n_boot and mask.any() else np.full(boot.n_boot, np.nan)
    return vals, reps


def evaluate_shapley(
    run_dirs: Sequence[Path], *, attributes: Sequence[str] = DEFAULT_ATTRIBUTES, bootstrap: int = 1000, seed: int = 0,
    min_group_size: int = 1,
) -> pd.DataFrame:
    """Shapley rows (module docstring) for every fusion run among ``run_dirs`` whose subset runs are there too."""
    infos = [load_run_info(p) for p in run_dirs]
    by_key: dict[tuple, list[RunInfo]] = {}
    for info in infos:
        by_key.setdefault((info.task, info.fold, info.seed, info.test_cohort, getattr(info, "split", "random")),
                          []).append(info)  # fmt: skip
    rows: list[dict] = []
    for key, group in sorted(by_key.items(), key=lambda kv: str(kv[0])):
        for full in sorted(group, key=lambda i: i.run_id):
            players = _sorted_players(full.modalities.split("+")) if full.modalities else ()
            if len(players) < 2:
                continue
            subset_runs: dict[frozenset, RunInfo] = {frozenset(players): full}
            for k in range(1, len(players)):
                for combo in combinations(players, k):
                    cands = [c for c in group if c.modalities and set(c.modalities.split("+")) == set(combo)]
                    chosen = _pick(cands, full.method, combo, full)
                    if chosen is not None:
                        subset_runs[frozenset(combo)] = chosen
            if len(subset_runs) < 2 ** len(players) - 1:
                log.info("%s: no Shapley values (missing subset runs on fold %s seed %s)", full.run_id, full.fold, full.seed)
                continue
            try:
                rows += _run_rows(full, players, subset_runs, attributes, bootstrap, seed, min_group_size)
            except MmfairError as exc:  # one broken run leaves the others' values standing (issue 16)
                log.warning("%s: no Shapley values: %s", full.run_id, exc)
    return to_frame(rows)


def _suppressed(y, mask, g, levels: list, min_group_size: int) -> set:
    """The levels of one attribute hidden by the small-cell rule with complementary suppression."""
    from mmfair.core.reporting.suppression import suppress_block

    n = [int((mask & (g == lv)).sum()) for lv in levels]
    n_pos = [int(y[mask & (g == lv)].sum()) for lv in levels]
    flags = suppress_block(levels, n, n_pos, min_group_size)
    return {lv for lv, f in zip(levels, flags) if f}


def _run_rows(full: RunInfo, players, subset_runs: dict[frozenset, RunInfo], attributes, bootstrap: int, seed: int,
              min_group_size: int = 1) -> list[dict]:  # fmt: skip
    source = predictions_path(full.run_dir, "test")
    pred = read_predictions(full.run_dir, "test")
    spec = task_spec(pred, source)
    if spec.kind == "multiclass":
        log.info("%s: Shapley values need AUROC; multiclass tasks are skipped", full.run_id)
        return []
    preds: dict[frozenset, pd.DataFrame] = {}
    for s, info in subset_runs.items():
        other = pred if info is full else read_predictions(info.run_dir, "test")
        if len(other) != len(pred) or not np.array_equal(other["stay_id"].to_numpy(), pred["stay_id"].to_numpy()):
            raise InputFileError(_MISALIGNED.format(source, predictions_path(info.run_dir, "test")))
        preds[s] = other
    has_all = np.logical_and.reduce([presence(pred, m, source) for m in players])
    boot = PatientBootstrap(subject_ids(pred, source), bootstrap, seed)
    groups = {a: level_text(pred[a].to_numpy()) for a in attributes if a in pred.columns}
    for a in attributes:
        if a not in groups:
            log.warning("%s: attribute '%s' not in the predictions; no per-group Shapley values", source, a)
    base = {**full.row_base(), "missing_rate": 0.0, "evaluated_on": "with_cxr" if "cxr" in players else "all"}
    params = {"players": list(players), "v_empty": V_EMPTY, "of": "auroc",
              "subset_runs": {_name(s): i.run_id for s, i in sorted(subset_runs.items(), key=lambda kv: _name(kv[0]))}}  # fmt: skip
    cells: dict[tuple[str, str], list] = {}  # (attribute, group) -> per label [(phi, reps, n, n_pos, v)]
    rows: list[dict] = []
    for label, label_col, score_col in spec.targets:
        y = pred[label_col].to_numpy(dtype=float)
        scores = {s: p[score_col].to_numpy(dtype=float) for s, p in preds.items()}
        mask = has_all & np.logical_and.reduce([np.isfinite(sc) for sc in scores.values()])
        blocks = [("all", "all", mask)]
        hidden: set[tuple[str, str]] = set()
        for a, g in groups.items():
            levels = sorted(set(g[mask].tolist()))
            blocks += [(a, level, mask & (g == level)) for level in levels]
            hidden |= {(a, lv) for lv in _suppressed(y, mask, g, levels, min_group_size)}
        for attribute, group_name, m in blocks:
            vals, reps = _values(y, scores, m, boot)
            if (attribute, group_name) in hidden:  # nothing of a suppressed cell is written, not even its v
                vals = {k: float("nan") for k in vals}
            defined = all(np.isfinite(v) for v in vals.values())
            phi = shapley_values(vals, players)
            phi_reps = shapley_values(reps, players, np.full(boot.n_boot, V_EMPTY))
            n, n_pos = int(m.sum()), int(y[m].sum())
            cells.setdefault((attribute, group_name), []).append((phi, phi_reps, n, n_pos, vals, defined))
            rows += _rows(base, params, boot, label, attribute, group_name, players, phi, phi_reps, n, n_pos, vals, defined)
    if spec.kind == "multilabel":
        for (attribute, group_name), per_label in cells.items():
            used = [c for c in per_label if c[5]]
            n, n_pos = per_label[0][2], None
            if not used:
                nan = {p: float("nan") for p in players}
                rows += _rows(base, params, boot, "all", attribute, group_name, players, nan,
                              {p: np.full(boot.n_boot, np.nan) for p in players}, n, n_pos, {}, False)  # fmt: skip
                continue
            phi = {p: float(np.mean([c[0][p] for c in used])) for p in players}
            phi_reps = {p: np.mean(np.stack([np.asarray(c[1][p]) for c in used]), axis=0) for p in players}
            vals = {s: float(np.mean([c[4][s] for c in used])) for s in used[0][4]}
            rows += _rows(base, params, boot, "all", attribute, group_name, players, phi, phi_reps, n, n_pos, vals, True)
    return rows


def _rows(base, params, boot, label, attribute, group_name, players, phi, phi_reps, n, n_pos, vals, defined) -> list[dict]:
    out = []
    p = {**params, "v": {_name(s): (round(float(v), 6) if np.isfinite(v) else None) for s, v in
                         sorted(vals.items(), key=lambda kv: _name(kv[0]))}}  # fmt: skip
    for player in players:
        value = float(phi[player])
        ci = boot.ci(phi_reps[player]) if defined and boot.n_boot else None
        out.append(make_row(**{**base, "modalities": player}, scenario="none", scenario_params=json.dumps(p, sort_keys=True),
                            label=label, attribute=attribute, group=group_name, metric="shapley", value=value,
                            n=n, n_pos=n_pos, defined=defined and bool(np.isfinite(value)),
                            ci_low=ci.low if ci else None, ci_high=ci.high if ci else None))  # fmt: skip
    return out


def update_shapley(path: Path, run_dirs: Sequence[Path], **kwargs) -> pd.DataFrame:
    """Replace every ``shapley`` row of the tidy table at ``path`` by those of :func:`evaluate_shapley`.

    All existing Shapley rows are dropped first (their subset runs may have changed); a locked, atomic rewrite.
    """
    rows = evaluate_shapley(run_dirs, **kwargs)

    def replace_shapley(table: pd.DataFrame) -> pd.DataFrame:
        kept = table[table["metric"] != "shapley"]
        return normalise(pd.concat([kept, rows], ignore_index=True)) if len(rows) else kept

    rewrite_results(Path(path), replace_shapley)
    return rows
