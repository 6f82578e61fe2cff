"""Writing MIMIC-shaped ``.csv.gz`` tables: exact column order, MIMIC value formats, fast and reproducible.

Timestamps are ``YYYY-MM-DD HH:MM:SS``, dates ``YYYY-MM-DD``, NULL is an empty field, integers have no
decimal point, text is quoted only when it must be. Each column is formatted once per *distinct* value
(event tables repeat ids, times and readings massively), then rows are joined in C via ``str.join``,
which is several times faster than ``DataFrame.to_csv``. gzip runs at level 1 with a zero mtime and no
file name in the header, so the same seed gives byte-identical files.

Rows are formatted and compressed a slice at a time (``TableWriter``), so the text of a table never sits
in memory whole, and a table can be written in pieces that are generated one after another: deflate's
output does not depend on how its input was split, so any slicing gives the same bytes as one write.
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
        text = np.datetime_as_string(uniques.astype("datetime64[s]"), unit="s")
        if not len(text):
            return []
        chars = text.view(np.uint32).reshape(len(text), -1)
        if (chars[:, 10] == ord("T")).all():  # 4-digit years: swap the "T" in place, in C
            chars[:, 10] = ord(" ")
            return text.tolist()
        return [s.replace("T", " ") for s in text]
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
    if values.dtype.kind == "f":
        # factorize holds -0.0 and 0.0 as one value, written as whichever a slice meets first: + 0.0 makes
        # every zero 0.0, so the text never depends on how the rows were sliced
        values = values + 0.0
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    uniques = np.asarray(uniques)
    if values.dtype.kind == "M":
        uniques = uniques.astype("datetime64[s]")
    formatted = np.array(_format_distinct(uniques, kind) + [""], dtype=object)
    return formatted[codes].tolist()  # code -1 (NULL) picks the trailing ""


ROWS_PER_SLICE = 250_000  # formatted text of one slice: tens of MB at most


class TableWriter:
    """A gzip CSV opened once, with its header, to which column data is appended in pieces.

    ``with TableWriter(path, columns, kinds) as out: out.append(part)`` for each part, in file order.
    """

    def __init__(self, path: Path, columns: list[str], kinds: Mapping[str, str] | None = None) -> None:
        self.path, self.columns, self.kinds = Path(path), list(columns), dict(kinds or {})
        self.n_rows = 0
        self._raw = None
        self._gz: gzip.GzipFile | None = None

    def __enter__(self) -> "TableWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(self.path, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=1, mtime=0)
        self._gz.write((",".join(self.columns) + "\n").encode("utf-8"))
        return self

    def __exit__(self, *exc) -> None:
        assert self._gz is not None and self._raw is not None
        self._gz.close()
        self._raw.close()

    def append(self, data: pd.DataFrame | Mapping[str, np.ndarray]) -> int:
        """Append the rows of ``data`` (its ``columns``, in that order); return how many were written."""
        assert self._gz is not None, "use TableWriter as a context manager"
        get = (lambda c: data[c].to_numpy()) if isinstance(data, pd.DataFrame) else (lambda c: np.asarray(data[c]))
        arrays = [get(c) for c in self.columns]
        n_rows = len(arrays[0]) if arrays else 0
        for start in range(0, n_rows, ROWS_PER_SLICE):
            text_columns = [_column_strings(a[start:start + ROWS_PER_SLICE], self.kinds.get(c))
                            for a, c in zip(arrays, self.columns)]
            self._gz.write(("\n".join(map(",".join, zip(*text_columns))) + "\n").encode("utf-8"))
        self.n_rows += n_rows
        return n_rows


def write_table(
    path: Path, data: pd.DataFrame | Mapping[str, np.ndarray], columns: list[str], kinds: Mapping[str, str] | None = None
) -> int:
    """Write ``columns`` of ``data`` (in that order) to ``path`` as gzip CSV; return the row count."""
    with TableWriter(path, columns, kinds) as out:
        return out.append(data)


def write_empty(path: Path, columns: list[str]) -> None:
    write_table(path, {c: np.array([], dtype=object) for c in columns}, columns)
