"""``mmfair score``: predictions made by any other tool, scored with mmfair's own evaluation core.

The question it answers: *how does a model trained elsewhere (CareBench, MedFuse, PyHealth, a hospital's
own) do on mmfair's metrics, bootstrap, validation thresholds and fairness gaps?* — the approach of
meds-evaluation and FairMedFM's CLI (evaluate predictions, not models), on mmfair's cohort.

Input schema (one CSV, one row per stay; the format of a run's ``predictions_<split>.csv`` plus ``split``)
-------------------------------------------------------------------------------------------------------
* ``stay_id`` — the ICU stay (``subject_id`` alone is accepted when each of those subjects has exactly
  one stay in ``data/cohort.csv``);
* ``split`` — ``val`` or ``test``. Validation rows are required: thresholds and recalibration are
  chosen on them, never on test;
* labels and probabilities, by task: ``label`` + ``score`` (binary; ``probability`` is accepted for
  ``score``), ``label_<slug>`` + ``score_<slug>`` (phenotypes), ``label`` + ``score_0`` … ``score_6``
  (length of stay). An empty score means the tool cannot score that stay;
* optional group columns (``race_group``, ``gender``, ``age_group``, ``insurance_group``, …) and
  ``present_cxr``; every one not given is joined from ``data/cohort.csv`` on ``stay_id`` (``present_cxr``
  from ``has_cxr``, ``subject_id`` and ``fold`` always from the cohort).

Refusals (:class:`~mmfair.core.errors.InputFileError`, one line, exit 2): a missing column, a ``split``
other than val/test or no validation rows, a non-numeric score, scores outside [0, 1] (negative ones are
reported as logits: "apply the sigmoid/softmax first"), a duplicate stay (also one in both splits), a
stay not in the cohort, a subject with several stays given without ``stay_id``, a task whose columns the
file lacks.

Where the rows go
-----------------
The file becomes a run-shaped folder ``<workspace>/external/<name>/`` (``config.json``,
``predictions_{val,test}.csv``, ``threshold.json`` chosen on the val rows; no model) and the evaluation core scores it exactly as it scores a run,
with method ``external:<name>``. The predictions are **comparable** with mmfair's runs when the test
stays are exactly one cohort fold ``k`` — or exactly that fold's stays with a CXR, the rest then written as
stays the tool cannot score, which the coverage rule turns into ``defined=false`` on ``evaluated_on=all``
and a value on ``with_cxr``, as for mmfair's ``cxr`` method — and the labels equal the cohort's. Then the
rows go to ``results/metrics.csv`` and ``results/fairness.csv`` with ``fold = k`` (so they enter the
report's tables and rank tests), and paired comparisons with ``reference`` are computed against each
reference run on fold ``k`` that scores exactly the same test stays. Otherwise the rows go to
``results/external.csv`` only (same tidy schema; ``n`` says how many stays) and never meet mmfair's runs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmfair.core.config import EvalFairConfig
from mmfair.core.errors import ConfigError, InputFileError
from mmfair.core.evaluation.run_folder import TaskSpec, task_spec
from mmfair.core.evaluation.thresholds import THRESHOLD_RULES, choose_threshold
from mmfair.core.io import file_sha256, write_json_atomic, write_text_atomic
from mmfair.core.provenance import collect
from mmfair.core.workspace import Workspace

log = logging.getLogger(__name__)

SPLITS = ("val", "test")
#: Group columns joined from cohort.csv when the file does not carry them.
GROUP_COLUMNS = ("gender", "age_group", "race_group", "insurance_group", "language_group", "marital_status",
                 "admission_type", "anchor_year_group")  # fmt: skip
EXTERNAL_DIR = "external"
EXTERNAL_CSV = "external.csv"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ScoreConfig(EvalFairConfig):
    """``mmfair score``: every ``eval-fair`` option, plus the tool's ``name`` (method ``external:<name>``), the
    ``task`` its predictions are for and, for the tidy ``modalities`` column, the ``modalities`` it used."""

    name: str = "tool"
    task: str = "mortality"
    modalities: tuple[str, ...] = ()
    time_inference: bool = False  # there is no model to time


@dataclass
class ScoreOutcome:
    run_dir: Path
    fold: int | None
    comparable: bool
    reason: str
    metrics: pd.DataFrame
    fairness: pd.DataFrame
    written_to: tuple[Path, ...]


# ---- reading and refusing ---------------------------------------------------------------------
def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputFileError(f"{path}: predictions file not found")
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""], low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None


def _require(df: pd.DataFrame, path: Path, column: str, why: str) -> None:
    if column not in df.columns:
        raise InputFileError(f"{path}: column '{column}' is missing ({why}; schema: DESIGN §3.5, `mmfair score --help`)")


def _check_splits(df: pd.DataFrame, path: Path) -> None:
    _require(df, path, "split", "val or test per row")
    split = df["split"].astype(str).str.strip().str.lower()
    bad = sorted(set(split) - set(SPLITS))
    if bad:
        raise InputFileError(f"{path}: column 'split' must hold val or test, found {bad[:5]}")
    if not (split == "val").any():
        raise InputFileError(f"{path}: no 'val' rows: thresholds are chosen on validation predictions, never on test")
    if not (split == "test").any():
        raise InputFileError(f"{path}: no 'test' rows to score")
    df["split"] = split


def _stay_ids(df: pd.DataFrame, path: Path) -> pd.Series:
    _require(df, path, "stay_id", "or subject_id, one id per row")
    ids = pd.to_numeric(df["stay_id"], errors="coerce")
    bad = ids.isna() | (ids % 1 != 0)
    if bad.any():
        raise InputFileError(f"{path}: column 'stay_id' must hold integer ids, found '{df['stay_id'][bad].iloc[0]}'")
    return ids.astype(np.int64)


def _subject_to_stay(df: pd.DataFrame, path: Path, cohort: pd.DataFrame) -> None:
    if "stay_id" in df.columns or "subject_id" not in df.columns:
        return
    counts = cohort["subject_id"].value_counts()
    subjects = pd.to_numeric(df["subject_id"], errors="coerce")
    several = [s for s in subjects.dropna().unique() if counts.get(s, 0) > 1]
    if several:
        raise InputFileError(f"{path}: subject_id {int(several[0])} has {counts[several[0]]} stays in cohort.csv; "
                             "give stay_id to say which")  # fmt: skip
    stay_of = cohort.drop_duplicates("subject_id").set_index("subject_id")["stay_id"]
    df["stay_id"] = subjects.map(stay_of)
    unknown = df["stay_id"].isna()
    if unknown.any():
        raise InputFileError(f"{path}: subject_id {df['subject_id'][unknown].iloc[0]} is not in cohort.csv "
                             f"({int(unknown.sum())} such rows)")  # fmt: skip


def _check_ids(df: pd.DataFrame, path: Path, cohort: pd.DataFrame) -> None:
    ids = _stay_ids(df, path)
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        first = int(dup.iloc[0])
        splits = sorted(set(df.loc[ids == first, "split"]))
        raise InputFileError(f"{path}: stay_id {first} appears {int((ids == first).sum())} times (splits "
                             f"{', '.join(splits)}); one row per stay")  # fmt: skip
    unknown = ~ids.isin(cohort["stay_id"])
    if unknown.any():
        raise InputFileError(f"{path}: stay_id {int(ids[unknown].iloc[0])} is not in cohort.csv "
                             f"({int(unknown.sum())} of {len(ids)} ids are not)")  # fmt: skip
    df["stay_id"] = ids


def _score_columns(spec: TaskSpec) -> list[str]:
    return list(spec.class_columns) if spec.kind == "multiclass" else [s for _, _, s in spec.targets]


def _check_scores(df: pd.DataFrame, path: Path, spec: TaskSpec) -> None:
    for col in _score_columns(spec):
        values = pd.to_numeric(df[col], errors="coerce")
        text = df[col].notna() & values.isna()
        if text.any():
            raise InputFileError(f"{path}: column '{col}' must hold probabilities, found '{df[col][text].iloc[0]}'")
        finite = values[np.isfinite(values)]
        if len(finite) < values.notna().sum():
            raise InputFileError(f"{path}: column '{col}' holds infinite values; leave a stay the tool cannot score empty")
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 0.0)
        if lo < 0.0:
            raise InputFileError(f"{path}: column '{col}' looks like logits, not probabilities (range {lo:.4g} to "
                                 f"{hi:.4g}); apply the sigmoid (softmax for length of stay) first")  # fmt: skip
        if hi > 1.0:
            raise InputFileError(f"{path}: column '{col}' has probabilities above 1 (max {hi:.4g}); scores must lie "
                                 "in [0, 1] (percentages: divide by 100; logits: apply the sigmoid)")  # fmt: skip
        df[col] = values.astype(float)


def _check_task(spec: TaskSpec, task: str, path: Path) -> None:
    from mmfair.core.training.tasks import get_task  # importing it registers the tasks

    kind = get_task(task).kind
    if spec.kind != kind:
        want = {"binary": "'label' + 'score'", "multilabel": "'label_<slug>' + 'score_<slug>'",
                "multiclass": "'label' + 'score_0'…'score_6'"}[kind]  # fmt: skip
        raise InputFileError(f"{path}: task '{task}' needs columns {want}; the file has {spec.kind} columns")


def read_external(path: Path, cohort: pd.DataFrame, task: str) -> tuple[pd.DataFrame, TaskSpec]:
    """The validated predictions (``split`` lower-cased, ``stay_id`` integer, scores float) and their task spec."""
    path = Path(path)
    df = _read_csv(path)
    if "score" not in df.columns and "probability" in df.columns:
        df = df.rename(columns={"probability": "score"})
    _check_splits(df, path)
    _subject_to_stay(df, path, cohort)
    _check_ids(df, path, cohort)
    spec = task_spec(df, path)
    _check_task(spec, task, path)
    _check_scores(df, path, spec)
    return df, spec


# ---- the run-shaped folder -------------------------------------------------------------------
def _cohort_labels(rows: pd.DataFrame, spec: TaskSpec, task: str) -> pd.DataFrame:
    """The cohort's labels of ``task`` under the file's label column names."""
    from mmfair.core.training.tasks import get_task

    t = get_task(task)
    if spec.kind == "multilabel":
        return pd.DataFrame({c: rows[f"{t.column_prefix}{name}"].to_numpy() if f"{t.column_prefix}{name}" in rows
                             else np.nan for name, c, _ in spec.targets}, index=rows.index)  # fmt: skip
    return pd.DataFrame({"label": rows[t.column].to_numpy()}, index=rows.index)


def _label_columns(spec: TaskSpec) -> list[str]:
    return ["label"] if spec.kind == "multiclass" else [c for _, c, _ in spec.targets]


def _joined(df: pd.DataFrame, cohort: pd.DataFrame) -> pd.DataFrame:
    """The file's rows with ``subject_id``, ``fold``, missing group columns and ``present_cxr`` from the cohort."""
    c = cohort.set_index("stay_id").loc[df["stay_id"]].reset_index()
    out = df.drop(columns=[x for x in ("subject_id", "fold") if x in df.columns]).reset_index(drop=True)
    out.insert(1, "fold", c["fold"].to_numpy())
    out["subject_id"] = c["subject_id"].to_numpy()
    for col in GROUP_COLUMNS:
        if col not in out.columns and col in c.columns:
            out[col] = c[col].to_numpy()
    if "present_cxr" not in out.columns and "has_cxr" in c.columns:
        out["present_cxr"] = pd.to_numeric(c["has_cxr"], errors="coerce").fillna(0).astype(int).to_numpy()
    return out


def _match(test: pd.DataFrame, cohort: pd.DataFrame, spec: TaskSpec, task: str) -> tuple[int | None, pd.DataFrame, str]:
    """``(fold, rows to add, reason)``: the cohort fold whose stays the test rows are (all, or those with a CXR;
    the fold's other stays returned as unscorable rows to add), or ``None`` and why not."""
    folds = sorted(set(test["fold"]))
    if len(folds) != 1:
        return None, test.iloc[:0], f"the test stays span cohort folds {folds}"
    k = int(folds[0])
    fold_rows = cohort[cohort["fold"] == k]
    have = set(test["stay_id"])
    with_cxr = fold_rows[pd.to_numeric(fold_rows.get("has_cxr", 0), errors="coerce").fillna(0) > 0]
    if have == set(fold_rows["stay_id"]):
        extra = fold_rows.iloc[:0]
    elif have == set(with_cxr["stay_id"]):
        extra = fold_rows[~fold_rows["stay_id"].isin(have)]
    else:
        return None, test.iloc[:0], (f"the {len(have)} test stays are neither all {len(fold_rows)} stays of cohort fold "
                                     f"{k} nor its {len(with_cxr)} stays with a CXR")  # fmt: skip
    mine = cohort.set_index("stay_id").loc[test["stay_id"]]
    truth = _cohort_labels(mine.reset_index(), spec, task)
    cols = _label_columns(spec)
    differ = ~(test[cols].to_numpy(dtype=float) == truth[cols].to_numpy(dtype=float)).all(axis=1)
    if differ.any():
        return None, test.iloc[:0], f"the labels differ from cohort.csv's '{task}' labels on {int(differ.sum())} stays"
    return k, extra, ""


def _padding(extra: pd.DataFrame, spec: TaskSpec, task: str) -> pd.DataFrame:
    """The fold's stays the tool did not score, as rows with the cohort's labels and empty scores."""
    rows = pd.DataFrame({"stay_id": extra["stay_id"].to_numpy(), "split": "test"})
    rows = pd.concat([rows, _cohort_labels(extra.reset_index(drop=True), spec, task)], axis=1)
    for col in _score_columns(spec):
        rows[col] = np.nan
    return rows


def _ordered(df: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    """The run folder's column order: ids, labels and scores, subject and groups, presence flags."""
    scores = _label_columns(spec) + _score_columns(spec) if spec.kind == "multiclass" else \
        [c for _, lc, sc in spec.targets for c in (lc, sc)]
    first = ["stay_id", "fold", *scores, "subject_id"]
    present = sorted(c for c in df.columns if c.startswith("present_"))
    rest = [c for c in df.columns if c not in first and c not in present and c != "split"]
    return df[first + rest + present]


def _thresholds(val: pd.DataFrame, spec: TaskSpec) -> dict[str, dict[str, float]]:
    """``threshold.json`` as training writes it: the stored rules, chosen on the validation rows."""
    if spec.kind == "multiclass":
        return {}
    out: dict[str, dict[str, float]] = {}
    for rule in THRESHOLD_RULES:
        chosen = {label: choose_threshold(val[lc].to_numpy(dtype=float), val[sc].to_numpy(dtype=float), rule)
                  for label, lc, sc in spec.targets}  # fmt: skip
        out[rule] = {label: t for label, t in chosen.items() if np.isfinite(t)}
    return out


def _run_folder(ws: Workspace, config: ScoreConfig, frames: dict[str, pd.DataFrame], info: dict,
                spec: TaskSpec) -> Path:  # fmt: skip
    run_dir = ws.root / EXTERNAL_DIR / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        write_text_atomic(run_dir / f"predictions_{split}.csv", frame.to_csv(index=False))
    write_json_atomic(run_dir / "threshold.json", _thresholds(frames["val"], spec))
    write_json_atomic(run_dir / "config.json", info)
    write_text_atomic(run_dir / "DONE", "")
    return run_dir


# ---- scoring ---------------------------------------------------------------------------------
def score_predictions(path: Path, ws: Workspace, config: ScoreConfig) -> ScoreOutcome:
    """Validate ``path``, write ``<workspace>/external/<name>/`` and score it (see the module docstring)."""
    if not _NAME.match(config.name):
        raise ConfigError(f"--name '{config.name}': use letters, digits, '_', '.', '-' (at most 64)")
    if not ws.cohort_csv.is_file():
        raise InputFileError(f"{ws.cohort_csv}: not found; `mmfair score` checks the ids against the cohort "
                             "(run `mmfair prep` first)")  # fmt: skip
    cohort = pd.read_csv(ws.cohort_csv, keep_default_na=False, na_values=[""], low_memory=False)
    df, spec = read_external(path, cohort, config.task)
    df = _joined(df, cohort)
    test = df[df["split"] == "test"].reset_index(drop=True)
    fold, extra, reason = _match(test, cohort, spec, config.task)
    if len(extra):
        pad = _joined(_padding(extra, spec, config.task), cohort)
        test = pd.concat([test, pad.reindex(columns=test.columns)], ignore_index=True)
    frames = {"val": _ordered(df[df["split"] == "val"].reset_index(drop=True), spec), "test": _ordered(test, spec)}
    info = {
        "run_id": f"external-{config.name}", "method": f"external:{config.name}", "fusion": f"external:{config.name}",
        "task": config.task, "fold": fold, "seed": None, "modalities": list(config.modalities),
        "train_cohort": "full", "split": "random", "external_file": str(Path(path).resolve()),
        "external_sha256": file_sha256(path), "comparable": fold is not None, "not_comparable_because": reason or None,
        "provenance": collect(ws, None, "cpu", library=f"external:{config.name}"),
    }  # fmt: skip
    run_dir = _run_folder(ws, config, frames, info, spec)
    return _evaluate(run_dir, ws, config, fold, reason)


def _evaluate(run_dir: Path, ws: Workspace, config: ScoreConfig, fold: int | None, reason: str) -> ScoreOutcome:
    from mmfair.core.evaluation import evaluate_clean, evaluate_fairness, upsert_results

    metrics = evaluate_clean([run_dir], bootstrap=config.bootstrap, seed=config.seed)
    fairness = evaluate_fairness([run_dir], config)
    if fold is None:
        log.warning("%s: not comparable with mmfair's runs (%s); rows go to %s only", run_dir.name, reason,
                    ws.results / EXTERNAL_CSV)  # fmt: skip
        upsert_results(ws.results / EXTERNAL_CSV, pd.concat([metrics, fairness], ignore_index=True))
        return ScoreOutcome(run_dir, None, False, reason, metrics, fairness, (ws.results / EXTERNAL_CSV,))
    comparisons = _comparisons(run_dir, ws, config)
    fairness = pd.concat([fairness, comparisons], ignore_index=True) if len(comparisons) else fairness
    upsert_results(ws.metrics_csv, metrics)
    upsert_results(ws.fairness_csv, fairness)
    return ScoreOutcome(run_dir, fold, True, "", metrics, fairness, (ws.metrics_csv, ws.fairness_csv))


def _scored_stays(run_dir: Path) -> set:
    from mmfair.core.evaluation.run_folder import read_predictions

    pred = read_predictions(run_dir, "test")
    cols = _score_columns(task_spec(pred, run_dir))
    return set(pred.loc[np.isfinite(pred[cols].to_numpy(dtype=float)).all(axis=1), "stay_id"])


def _comparisons(run_dir: Path, ws: Workspace, config: ScoreConfig) -> pd.DataFrame:
    """Paired comparisons with every reference run of the same task and fold scoring exactly the same test stays."""
    from mmfair.core.evaluation.reference_comparisons import evaluate_comparisons
    from mmfair.core.evaluation.run_folder import load_run_info
    from mmfair.core.evaluation.tidy import to_frame

    if not config.reference:
        return to_frame([])
    mine = load_run_info(run_dir)
    stays = _scored_stays(run_dir)
    refs = []
    for ref in ws.finished_runs():
        info = load_run_info(ref)
        if info.method == config.reference and info.task == mine.task and info.fold == mine.fold:
            if _scored_stays(ref) == stays:
                refs.append(ref)
            else:
                log.info("%s: reference run %s scores other test stays; not compared", run_dir.name, ref.name)
    if not refs:
        return to_frame([])
    rows = evaluate_comparisons([run_dir, *refs], config)
    return rows[rows["run_id"] == mine.run_id].reset_index(drop=True)


def describe(outcome: ScoreOutcome) -> str:
    """One line on where the rows went and why."""
    where = ", ".join(str(p) for p in outcome.written_to)
    if outcome.comparable:
        return f"comparable with mmfair's runs on cohort fold {outcome.fold}; rows in {where}"
    return f"not comparable with mmfair's runs ({outcome.reason}); rows in {where} only"


