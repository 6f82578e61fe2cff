"""The tidy results schema (DESIGN §3.4) and the idempotent upsert into ``results/*.csv``.

One value per row. Conventions fixed here where DESIGN is silent:

* ``attribute`` is ``all`` on rows that are not about a sensitive attribute (clean, missing, cost rows);
  a fairness gap row has the attribute's name and ``group=all``.
* ``draw`` is 0 and ``draw_seed`` empty for scenario ``none``; ``scenario_params`` is ``{}`` there.
* ``modalities`` is the run's modalities joined by ``+`` (``ehr+cxr``).
* ``higher_is_better`` is empty for descriptive quantities without a direction (``prevalence``,
  ``selection_rate``).
* ``value`` is empty whenever ``defined`` is false: an undefined metric is never written as 0.
* ``train_cohort``/``test_cohort`` are ``full`` or ``matched`` (only stays with a CXR), ``split`` is
  ``random`` or ``temporal``, ``train_missing`` describes missingness induced at training
  (``none``, ``dropout=0.3``, ``rate=0.5`` or both joined by ``+``); see :func:`.run_folder.load_run_info`.
* ``evaluated_on`` says which test stays a row scored: ``all`` (every stay of the test fold or cohort),
  ``with_cxr`` (only stays that have a CXR) or ``common`` (the stays shared by every method it is compared
  with); ``n`` is their number.
* ``weighting`` is ``stay`` (every ICU stay counts once) or ``patient`` (every patient counts once).
* ``protocol`` (:data:`mmfair.core.protocol.PROTOCOL_VERSION`) and ``mmfair_version`` say which code produced
  the row; they are values, not keys, so re-evaluating under a new protocol replaces the row.
* Schema versions (:data:`SCHEMA_VERSION`): a file is migrated on reading by :func:`migrate`; the version is
  recognised from its columns, so a results file copied elsewhere still reads.
* Paired comparisons against a reference method (:mod:`.reference_comparisons`) put the reference in
  ``scenario_params`` (``{"reference": ..., "reference_run": ..., ...}``); their p-values are rows of
  their own (``*_p``, ``*_p_adjusted``) with empty intervals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from filelock import FileLock

import mmfair
from mmfair.core.errors import InputFileError
from mmfair.core.io import remove_stale_temporaries, write_csv_atomic
from mmfair.core.protocol import PROTOCOL_VERSION

#: Version of the results schema below. 1: mmfair 0.1.0 (columns up to ``ci_high``; files older than that
#: lack ``split``/``train_missing``). 2: adds ``evaluated_on``, ``weighting``, ``protocol``, ``mmfair_version``.
SCHEMA_VERSION = 2

TIDY_COLUMNS: tuple[str, ...] = (
    "run_id", "method", "modalities", "task", "label", "fold", "seed", "train_cohort", "test_cohort",
    "evaluated_on", "split", "selection", "scenario", "scenario_params", "missing_rate", "train_missing_rate",
    "train_missing", "draw", "draw_seed", "threshold_rule", "weighting", "attribute", "group", "metric", "value",
    "higher_is_better", "n", "n_pos", "defined", "ci_low", "ci_high", "protocol", "mmfair_version",
)  # fmt: skip

VALUE_COLUMNS: tuple[str, ...] = (
    "value", "higher_is_better", "n", "n_pos", "defined", "ci_low", "ci_high", "protocol", "mmfair_version",
)  # fmt: skip
KEY_COLUMNS: tuple[str, ...] = tuple(c for c in TIDY_COLUMNS if c not in VALUE_COLUMNS)

DEFAULTS: dict[str, object] = {
    "selection": "overall",
    "threshold_rule": "val-youden",
    "scenario": "none",
    "scenario_params": "{}",
    "group": "all",
    "label": "all",
    "attribute": "all",
    "draw": 0,
    "train_cohort": "full",
    "test_cohort": "full",
    "split": "random",
    "train_missing": "none",
    "evaluated_on": "all",
    "weighting": "stay",
}

#: What a schema-1 file's rows get for the columns schema 2 added: which stays they scored was not recorded
#: (``unrecorded``: eval-missing's MCAR rows of protocol 1 scored only stays with a CXR), stays were weighted
#: equally, and they come from protocol 1.
_V1_TO_V2: dict[str, str] = {"evaluated_on": "unrecorded", "weighting": "stay", "protocol": "1", "mmfair_version": ""}
#: Columns even older files lack, with the run settings those runs used.
_V0_TO_V1: dict[str, str] = {"split": "random", "train_missing": "none"}

#: Direction of each metric; ``None`` for descriptive quantities. Gaps and costs: lower is better.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "auroc": True, "auprc": True, "tpr": True, "fpr": False, "ppv": True, "prevalence": None,
    "selection_rate": None, "brier": False, "ece": False, "accuracy": True, "macro_f1": True, "kappa": True,
    "kappa_linear": True,
    "demographic_parity_difference": False, "demographic_parity_ratio": True,
    "equalized_odds_difference": False, "equal_opportunity_difference": False, "auroc_gap": False,
    "ece_gap": False, "brier_gap": False, "worst_group_auroc": True, "es_auc": True,
    "equalized_odds_mean": False, "tpr_gap": False, "fpr_gap": False,
    "relative_robustness": True, "effective_robustness": True, "r_star": True, "shapley": True,
    "n_params": False, "train_seconds": False, "peak_memory_mb": False, "infer_stays_per_s": True,
    "selected_epoch": None, "probe_auroc": None,
    "auroc_difference": True, "auroc_difference_p": None, "auroc_difference_p_adjusted": None,
    "auroc_gap_difference": False, "auroc_gap_difference_p": None, "auroc_gap_difference_p_adjusted": None,
}  # fmt: skip

_UNKNOWN_METRIC = "metric '{0}' is not in the tidy schema (DESIGN §3.4); add it there first"
_BAD_COLUMNS = "{0}: not a tidy results table; missing columns {1}"

_INT_COLUMNS = ("fold", "seed", "draw", "draw_seed", "n", "n_pos", "protocol")
_FLOAT_COLUMNS = ("missing_rate", "train_missing_rate", "value", "ci_low", "ci_high")


def higher_is_better(metric: str) -> bool | None:
    """Direction of ``metric``; raises ``KeyError`` with a clear message for a name outside the schema."""
    try:
        return HIGHER_IS_BETTER[metric]
    except KeyError:
        raise KeyError(_UNKNOWN_METRIC.format(metric)) from None


def make_row(**fields: object) -> dict[str, object]:
    """One tidy row: defaults filled in, ``higher_is_better`` from the metric, value blanked if undefined."""
    row: dict[str, object] = {c: None for c in TIDY_COLUMNS}
    row.update(DEFAULTS)
    unknown = set(fields) - set(TIDY_COLUMNS)
    if unknown:
        raise KeyError(f"not tidy columns: {sorted(unknown)}")
    row.update(fields)
    if row["protocol"] is None:
        row["protocol"] = PROTOCOL_VERSION
    if row["mmfair_version"] is None:
        row["mmfair_version"] = mmfair.__version__
    row["higher_is_better"] = higher_is_better(str(row["metric"]))
    flag = True if row["defined"] is None else bool(row["defined"])
    defined = flag and row["value"] is not None and bool(np.isfinite(float(row["value"])))  # type: ignore[arg-type]
    row["defined"] = defined
    if not defined:
        row["value"] = row["ci_low"] = row["ci_high"] = float("nan")
    return row


def to_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows → a DataFrame with exactly ``TIDY_COLUMNS``, in order, with stable dtypes."""
    return normalise(pd.DataFrame(rows, columns=list(TIDY_COLUMNS)))


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Cast a tidy frame (fresh or read from CSV) to the schema's dtypes and column order."""
    df = df.reindex(columns=list(TIDY_COLUMNS)).copy()
    for col in _INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    for col in _FLOAT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["defined"] = df["defined"].map(_to_bool).fillna(False).astype(bool)
    df["higher_is_better"] = df["higher_is_better"].map(_to_bool).astype("boolean")
    for col in TIDY_COLUMNS:
        if col not in _INT_COLUMNS and col not in _FLOAT_COLUMNS and col not in ("defined", "higher_is_better"):
            df[col] = df[col].map(lambda v: "" if _is_missing(v) else str(v)).astype(object)
    return df.reset_index(drop=True)


def _is_missing(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _to_bool(v: object):
    if _is_missing(v) or v == "":
        return pd.NA
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def _canonical(v: object) -> str:
    """A key value as text that survives a CSV round trip (``0``, ``0.0`` and ``"0"`` are one key)."""
    if _is_missing(v) or v == "":
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    if isinstance(v, str) and not v.strip().lstrip("-").replace(".", "", 1).replace("e", "", 1).isdigit():
        return v  # text such as "inf" or "nan" stays text
    if math.isfinite(x) and x.is_integer():
        return str(int(x))
    return repr(x)


def _keys(df: pd.DataFrame) -> pd.Series:
    parts = [df[c].map(_canonical) for c in KEY_COLUMNS]
    if len(df) == 0:
        return pd.Series([], dtype=object)
    return pd.Series(["\x1f".join(t) for t in zip(*parts)], index=df.index, dtype=object)


def read_results(path: Path) -> pd.DataFrame:
    """Read a tidy results CSV (empty frame when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return to_frame([])
    df = migrate(pd.read_csv(path, dtype=str, keep_default_na=False))
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise InputFileError(_BAD_COLUMNS.format(path, ", ".join(missing)))
    return normalise(df)


def migrate(df: pd.DataFrame) -> pd.DataFrame:
    """A results table read from any schema version, brought to :data:`SCHEMA_VERSION` (columns added with the
    values their rows' runs and evaluations actually had; nothing renamed)."""
    for added in (_V0_TO_V1, _V1_TO_V2):
        for column, value in added.items():
            if column not in df.columns:
                df[column] = value
    return df


def results_lock(path: Path) -> FileLock:
    """The lock every writer of a results file holds while it reads, merges and replaces it."""
    return FileLock(str(Path(path)) + ".lock")


def upsert_results(path: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Merge ``rows`` into the tidy CSV at ``path``: rows with the same key are replaced, never duplicated.

    The key is every column except ``value, higher_is_better, n, n_pos, defined, ci_low, ci_high``.
    Existing rows keep their order; replaced and new rows go to the end. Written through
    :func:`rewrite_results`, so concurrent writers (several ``train`` processes, a study's pool) never lose
    each other's rows. Returns the merged table.
    """
    return rewrite_results(path, lambda table: merge_rows(table, rows))


def merge_rows(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``rows`` merged in as :func:`upsert_results` merges them (pure)."""
    new = normalise(rows)
    new_keys = _keys(new)
    new = new[~new_keys.duplicated(keep="last")]
    new_keys = new_keys[new.index]
    if len(table):
        table = table[~_keys(table).isin(set(new_keys))]
    return normalise(pd.concat([table, new], ignore_index=True)) if len(table) else new.reset_index(drop=True)


def rewrite_results(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """Replace the tidy CSV at ``path`` by ``change(its rows)``: read, changed and written to a temporary name
    renamed into place, all under :func:`results_lock`. What a writer killed mid-write left beside the table
    is removed first (under the lock no live writer of this table can be writing one). Returns the new table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with results_lock(path):
        remove_stale_temporaries(path.parent, target=path.name)
        table = change(read_results(path)).reset_index(drop=True)
        write_csv_atomic(path, table)
    return table
