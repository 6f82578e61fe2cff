"""Writing MIMIC-shaped ``.csv.gz`` tables: exact column order, MIMIC value formats, fast and reproducible.

Timestamps are ``YYYY-MM-DD HH:MM:SS``, dates ``YYYY-MM-DD``, NULL is an empty field, integers have no
decimal point, text is quoted only when it must be. Each column is formatted once per *distinct* value
(event tables repeat ids, times and readings massively), then rows are joined in C via ``str.join``,
which is several times faster than ``DataFrame.to_csv``. gzip runs at level 1 with a zero mtime and no
file name in the header, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

TIMESTAMP, DATE, NULLABLE_INT, ONE_DECIMAL = "timestamp", "date", "nullable_int", "one_decimal"


def _format_distinct(uniques: np.ndarray, kind: str | None) -> list[str]:
    if uniques.dtype.kind == "M":
        if kind == DATE:
            return list(np.datetime_as_string(uniques.astype("datetime64[D]"), unit="D"))
        return [s.replace("T", " ") for s in np.datetime_as_string(uniques.astype("datetime64[s]"), unit="s")]
    if uniques.dtype.kind == "f":
        if kind == NULLABLE_INT:
            return [str(int(x)) for x in uniques]
        if kind == ONE_DECIMAL:
            return ["%.1f" % x for x in uniques]
        return ["%.10g" % x for x in uniques]
    if uniques.dtype.kind in "iub":
        return [str(int(x)) for x in uniques]
    return [_quote(str(x)) for x in uniques]


def _quote(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _column_strings(values: np.ndarray, kind: str | None) -> list[str]:
    values = np.asarray(values)
    if values.dtype.kind == "M":
        values = values.astype("datetime64[s]")
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    uniques = np.asarray(uniques)
    if values.dtype.kind == "M":
        uniques = uniques.astype("datetime64[s]")
    formatted = np.array(_format_distinct(uniques, kind) + [""], dtype=object)
    return formatted[codes].tolist()  # code -1 (NULL) picks the trailing ""


def write_table(
    path: Path, data: pd.DataFrame | Mapping[str, np.ndarray], columns: list[str], kinds: Mapping[str, str] | None = None
) -> int:
    """Write ``columns`` of ``data`` (in that order) to ``path`` as gzip CSV; return the row count."""
    kinds = kinds or {}
    get = (lambda c: data[c].to_numpy()) if isinstance(data, pd.DataFrame) else (lambda c: np.asarray(data[c]))
    text_columns = [_column_strings(get(c), kinds.get(c)) for c in columns]
    n_rows = len(text_columns[0]) if text_columns else 0
    body = "\n".join(map(",".join, zip(*text_columns)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as gz:
        gz.write((",".join(columns) + "\n").encode("utf-8"))
        if n_rows:
            gz.write((body + "\n").encode("utf-8"))
    return n_rows


def write_empty(path: Path, columns: list[str]) -> None:
    write_table(path, {c: np.array([], dtype=object) for c in columns}, columns)
