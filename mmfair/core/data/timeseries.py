"""Hourly binning of chartevents and labevents into ``/ehr/values`` (DESIGN §3.2).

Everything up to one value per (stay, hour, variable) happens in DuckDB: the scan keeps only the
map's itemids, the join keeps only the observation window, and the last-wins choice is a window
function. Python receives the already-binned rows.

Rules:

* bin = ``floor((charttime − intime) / 1 h)`` for ``intime ≤ charttime < intime + window``;
  chartevents attach to a stay by ``stay_id``, labevents by ``subject_id`` and the window (their
  ``hadm_id`` is often empty);
* a value is the text map's number when the charted text is in the variable's ``text`` map, else
  ``valuenum``, else the text parsed as a number; then the source's unit rule applies;
* observations outside the variable's valid range are dropped before the last-wins choice (so an
  hour with a valid and an invalid observation keeps the valid one) and counted per hour;
* a lab value (labevents) counts only if its result was stored inside the window (``storetime <
  intime + window``): a result stored later was not known at the 48 h mark, although it is still
  binned at its charttime (when the specimen was drawn). A lab row without a storetime is judged by
  its charttime alone; :attr:`HourlyResult.labs` counts both kinds (``prep.json`` ``labs``; logged);
* within an hour the last observation wins, ordered by charttime, then storetime (missing first),
  then the source's priority, then the value;
* derived channels (GCS total) are computed from the binned components of the same hour;
* a variable with ``aggregate: sum`` (hourly urine output from ``outputevents``) is instead the sum
  of its in-range observations of the hour, each multiplied by its source's ``sign`` (GU irrigant
  instilled counts negative, as in mimic-code's ``urine_output``); the range check applies to each
  charted volume before the sign. An hour with no charted volume stays NaN (unobserved), not 0.
  outputevents rows attach by ``stay_id`` and are binned by ``charttime``.

No filling or scaling happens here: unobserved hours stay NaN.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import duckdb
import numpy as np
import pandas as pd

from mmfair.core.data.mimic import READ_ERRORS, MimicSource, checked_scan, read_error
from mmfair.core.data.variables import VariableMap

log = logging.getLogger(__name__)

GCS_INTUBATED_VERBAL = 0.0
GCS_INTUBATED_TOTAL = 15.0

Progress = Callable[[str, int, int], None]

TABLE_KEYS = {"chartevents": "icu/chartevents", "labevents": "hosp/labevents", "outputevents": "icu/outputevents"}

_CONVERT_SQL = """
    CASE o.convert
        WHEN 'f_to_c' THEN (o.raw - 32.0) * 5.0 / 9.0
        WHEN 'percent_to_fraction' THEN CASE WHEN o.raw > 1 THEN o.raw / 100.0 ELSE o.raw END
        WHEN 'fraction_to_percent' THEN CASE WHEN o.raw <= 1 THEN o.raw * 100.0 ELSE o.raw END
        WHEN 'lb_to_kg' THEN o.raw * 0.45359237
        WHEN 'in_to_cm' THEN o.raw * 2.54
        ELSE o.raw
    END"""


@dataclass
class HourlyResult:
    """``values`` float32 [N, window, F] (NaN = unobserved) and the per-hour coverage table."""

    values: np.ndarray
    coverage: pd.DataFrame
    labs: dict = field(default_factory=dict)   # lab observations stored after the window / without storetime


def bin_hourly(con: duckdb.DuckDBPyConnection, source: MimicSource, stays: pd.DataFrame,
               variables: VariableMap, window_hours: int, progress: Progress | None = None) -> HourlyResult:
    """Bin the map's variables for ``stays`` (rows in output order: ``stay_id, subject_id, intime``).

    Parameters
    ----------
    con : duckdb connection
    source : MimicSource
        Where chartevents / labevents / d_labitems live.
    stays : DataFrame
        One row per cohort stay, in the order of the output rows.
    variables : VariableMap
        The channels, in output order.
    window_hours : int
        Number of hourly bins from ``intime``.
    progress : callable, optional
        ``(description, done, total)``.

    Returns
    -------
    HourlyResult
    """
    items, texts = _item_tables(variables)
    registered = {
        "ts_stays": stays[["stay_id", "subject_id", "intime"]].assign(stay_idx=np.arange(len(stays))),
        "ts_items": items,
        "ts_texts": texts,
    }
    for name, frame in registered.items():
        con.register(name, frame)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE ts_obs (stay_idx BIGINT, var_idx INTEGER, hour INTEGER, "
                    "ct TIMESTAMP, st TIMESTAMP, priority INTEGER, v DOUBLE, in_range BOOLEAN, summed BOOLEAN, "
                    "late BOOLEAN)")
        tables = [t for t in TABLE_KEYS if (items["table_name"] == t).any()]
        for done, table in enumerate(tables):
            if progress:
                progress(f"reading {table}", done, len(tables))
            _collect_observations(con, source, table, items, window_hours)
        if progress:
            progress("binning", len(tables), len(tables))
        binned, out_of_range = _last_wins(con)
        labs = _lab_storetime_counts(con, window_hours) if "labevents" in tables else {}
    finally:
        con.execute("DROP TABLE IF EXISTS ts_obs")
        for name in registered:
            con.unregister(name)
    values = _to_array(binned, len(stays), window_hours, len(variables.variables))
    _derive_channels(values, variables)
    coverage = _coverage(values, out_of_range, variables)
    return HourlyResult(values=values, coverage=coverage, labs=labs)


def _item_tables(variables: VariableMap) -> tuple[pd.DataFrame, pd.DataFrame]:
    item_rows, text_rows = [], []
    for var_idx, var in enumerate(variables.variables):
        for src in var.sources:
            item_rows.append((src.table, src.itemid, var_idx, src.priority, src.convert or "",
                              (src.fluid or "").strip().lower(), var.valid_low, var.valid_high, float(src.sign),
                              var.aggregate == "sum"))
        text_rows.extend((var_idx, text, num) for text, num in var.text.items())
    items = pd.DataFrame(item_rows, columns=["table_name", "itemid", "var_idx", "priority", "convert", "fluid",
                                             "low", "high", "sign", "summed"])
    items = items.astype({"itemid": "int32", "var_idx": "int32", "priority": "int32", "sign": "float64",
                          "summed": "bool"})
    texts = pd.DataFrame(text_rows, columns=["var_idx", "text", "num"]).astype({"var_idx": "int32",
                                                                                "num": "float64"})
    return items, texts


def _collect_observations(con: duckdb.DuckDBPyConnection, source: MimicSource, table: str,
                          items: pd.DataFrame, window_hours: int) -> None:
    key = TABLE_KEYS[table]
    path = source.table(key)
    scan = checked_scan(con, path, key)
    itemids = sorted(int(i) for i in items.loc[items["table_name"] == table, "itemid"].unique())
    itemid_list = "(" + ", ".join(map(str, itemids)) + ")"
    fluid_join, fluid_check = "", "TRUE"
    if table == "labevents":
        link, key_column, text_column, num_column = "e.subject_id = s.subject_id", "e.subject_id", "e.value", "e.valuenum"
        fluid_join, fluid_check = _fluid_join(con, source), "(m.fluid = '' OR lower(trim(d.fluid)) = m.fluid)"
    elif table == "outputevents":     # value is the volume (a number); there is no valuenum
        link, key_column, text_column, num_column = "e.stay_id = s.stay_id", "e.stay_id", "CAST(NULL AS VARCHAR)", "e.value"
    else:
        link, key_column, text_column, num_column = "e.stay_id = s.stay_id", "e.stay_id", "e.value", "e.valuenum"
    window = f"to_hours(CAST({int(window_hours)} AS BIGINT))"
    # labs: TRUE when stored at or after the window's end (excluded from binning); NULL for the other tables
    late = f"COALESCE(e.st >= s.intime + {window}, FALSE)" if table == "labevents" else "CAST(NULL AS BOOLEAN)"
    sql = f"""
        INSERT INTO ts_obs
        WITH ev AS (
            SELECT e.itemid, TRY_CAST(e.charttime AS TIMESTAMP) AS ct, TRY_CAST(e.storetime AS TIMESTAMP) AS st,
                   {text_column} AS value, {num_column} AS valuenum, {key_column}
            FROM {scan} e
            WHERE e.itemid IN {itemid_list}),
        o AS (
            SELECT s.stay_idx, m.var_idx, m.priority, m.convert, m.low, m.high, m.sign, m.summed, e.ct, e.st,
                   CAST(floor(epoch(e.ct - s.intime) / 3600.0) AS INTEGER) AS hour,
                   COALESCE(tx.num, e.valuenum, TRY_CAST(trim(e.value) AS DOUBLE)) AS raw, {late} AS late
            FROM ev e
            JOIN ts_stays s ON {link} AND e.ct >= s.intime AND e.ct < s.intime + {window}
            JOIN ts_items m ON m.table_name = '{table}' AND m.itemid = e.itemid
            {fluid_join}
            LEFT JOIN ts_texts tx ON tx.var_idx = m.var_idx AND tx.text = lower(trim(e.value))
            WHERE {fluid_check})
        SELECT stay_idx, var_idx, hour, ct, st, priority, v * sign, v >= low AND v <= high, summed, late
        FROM (SELECT o.*, {_CONVERT_SQL} AS v FROM o WHERE o.raw IS NOT NULL AND NOT isnan(o.raw))
    """
    before = con.execute("SELECT count(*) FROM ts_obs").fetchone()[0]
    try:
        with _joins_as_written(con):
            con.execute(sql)
    except READ_ERRORS as exc:
        raise read_error(path, exc) from None
    log.info("%s: %d observations of the map's items in the window", table,
             con.execute("SELECT count(*) FROM ts_obs").fetchone()[0] - before)


# DuckDB cannot estimate a gzip CSV's rows (it guesses a few dozen), so it makes the filtered event stream,
# tens of millions of rows at MIMIC scale, the build side of every hash join and runs out of memory under a
# low --memory-limit (seen at 75,000 stays and 512 MB). Joins are written event stream first, small tables
# after, which is the right probe/build order as it stands.
_FIXED_JOIN_OPTIMIZERS = ("join_order,build_side_probe_side", "join_order")


@contextmanager
def _joins_as_written(con: duckdb.DuckDBPyConnection):
    """Within the block, DuckDB keeps the query's join order and build sides (the previous setting after)."""
    previous = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0]
    for names in _FIXED_JOIN_OPTIMIZERS:
        try:
            con.execute(f"SET disabled_optimizers = '{names}'")
            break
        except duckdb.Error:  # an older DuckDB without the build-side optimizer
            continue
    try:
        yield
    finally:
        con.execute(f"SET disabled_optimizers = '{previous}'")


def _fluid_join(con: duckdb.DuckDBPyConnection, source: MimicSource) -> str:
    path = source.table("hosp/d_labitems")
    return f"LEFT JOIN {checked_scan(con, path, 'hosp/d_labitems')} d ON d.itemid = e.itemid"


def _last_wins(con: duckdb.DuckDBPyConnection) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    binned = con.execute("""
        SELECT stay_idx, hour, var_idx, v FROM ts_obs WHERE in_range AND NOT summed AND late IS NOT TRUE
        QUALIFY row_number() OVER (PARTITION BY stay_idx, hour, var_idx
                                   ORDER BY ct DESC, st DESC NULLS LAST, priority DESC, v DESC) = 1
        UNION ALL
        SELECT stay_idx, hour, var_idx, sum(v) AS v FROM ts_obs WHERE in_range AND summed AND late IS NOT TRUE
        GROUP BY stay_idx, hour, var_idx
    """).fetchnumpy()
    out_of_range = con.execute("""
        SELECT var_idx, hour, count(*) AS n FROM ts_obs WHERE NOT in_range AND late IS NOT TRUE
        GROUP BY var_idx, hour
    """).df()
    return binned, out_of_range


def _lab_storetime_counts(con: duckdb.DuckDBPyConnection, window_hours: int) -> dict:
    total, late, no_storetime = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE late), count(*) FILTER (WHERE st IS NULL) "
        "FROM ts_obs WHERE late IS NOT NULL").fetchone()
    log.info("labevents: %d of %d lab observations charted in the window were stored after it (not used)",
             late, total)
    if no_storetime:
        log.warning("labevents: %d of %d lab observations charted in the window have no storetime; they are used "
                    "on their charttime alone", no_storetime, total)
    return {"rule": f"used only if stored before intime + {int(window_hours)} h; binned at charttime",
            "observations_in_window": int(total), "stored_after_window": int(late),
            "without_storetime": int(no_storetime)}


def _to_array(binned: dict[str, np.ndarray], n_stays: int, window_hours: int, n_vars: int) -> np.ndarray:
    values = np.full((n_stays, window_hours, n_vars), np.nan, dtype=np.float32)
    index = tuple(np.asarray(binned[c], dtype=np.int64) for c in ("stay_idx", "hour", "var_idx"))
    values[index] = np.asarray(binned["v"], dtype=np.float32)
    return values


def _derive_channels(values: np.ndarray, variables: VariableMap) -> None:
    for k, var in enumerate(variables.variables):
        if var.derived is None:
            continue
        if var.derived["rule"] == "gcs_total":
            values[:, :, k] = gcs_total(values[:, :, variables.index(var.derived["eye"])],
                                        values[:, :, variables.index(var.derived["verbal"])],
                                        values[:, :, variables.index(var.derived["motor"])])


def gcs_total(eye: np.ndarray, verbal: np.ndarray, motor: np.ndarray) -> np.ndarray:
    """Eye + verbal + motor where all three were observed; 15 where verbal is 0 (intubated, mimic-code)."""
    total = eye + verbal + motor
    return np.where(verbal == GCS_INTUBATED_VERBAL, GCS_INTUBATED_TOTAL, total).astype(np.float32)


def _coverage(values: np.ndarray, out_of_range: pd.DataFrame, variables: VariableMap) -> pd.DataFrame:
    n_stays, n_hours, n_vars = values.shape
    observed = (~np.isnan(values)).mean(axis=0) if n_stays else np.zeros((n_hours, n_vars))
    counts = np.zeros((n_hours, n_vars), dtype=np.int64)
    if len(out_of_range):
        counts[out_of_range["hour"].to_numpy(dtype=np.int64),
               out_of_range["var_idx"].to_numpy(dtype=np.int64)] = out_of_range["n"].to_numpy()
    hours, var_idx = np.meshgrid(np.arange(n_hours), np.arange(n_vars), indexing="xy")
    return pd.DataFrame({
        "variable": np.asarray(variables.names, dtype=object)[var_idx.ravel()],
        "hour": hours.ravel(),
        "observed_share": observed.T.ravel().round(6),
        "out_of_range": counts.T.ravel(),
    })
