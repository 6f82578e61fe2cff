"""Finding and reading the raw MIMIC-IV and MIMIC-CXR-JPG files with DuckDB.

Every table is read with ``read_csv`` and an explicit column list built from the file's own header:
each column gets its type *by name* (columns prep does not use are read as VARCHAR and never touched),
so a reordered file still reads correctly and a missing or renamed column is reported by name before
any SQL runs. Timestamps are cast with ``TRY_CAST`` from VARCHAR, which accepts values with and
without milliseconds.

Layout: ``--mimic-root`` is the folder holding ``hosp/`` and ``icu/`` (``…/mimiciv/<version>/``) or a
parent holding exactly one such folder; each table is ``<name>.csv.gz`` or, failing that,
``<name>.csv``; only the tables prep reads are required (icustays, admissions, patients,
diagnoses_icd, and chartevents / labevents + d_labitems / outputevents as the variable map needs),
and a missing one is named with its expected path. A ``core/`` folder (or an ``ethnicity`` column
without ``race``) is MIMIC-IV v1.0, refused. The version (2.2 vs 3.x) is read from the values
(:func:`detect_version`).
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from mmfair.core.errors import ConfigError, InputFileError

log = logging.getLogger(__name__)

ERR_NO_ROOT = "MIMIC-IV root {root}: not found"
ERR_NO_MODULES = ("MIMIC-IV root {root}: no hosp/ and icu/ folders there (point --mimic-root at the folder "
                  "holding them, e.g. .../mimiciv/2.2)")
ERR_MANY_VERSIONS = "MIMIC-IV root {root}: several versions inside ({found}); point at one of them"
ERR_NO_TABLE = "{path}.csv.gz: required table not found (nor {name}.csv beside it)"
ERR_NO_COLUMN = "{path}: required column {column!r} not found (header has: {header})"
ERR_EMPTY_FILE = "{path}: file is empty (no header line)"
ERR_EMPTY_TABLE = "{path}: table has no rows"
ERR_READ = "{path}: cannot read column {column!r}: {detail}"
ERR_QUERY = "{path}: cannot read ({detail})"
ERR_ETHNICITY = ("{path}: has column 'ethnicity' but no 'race': this is MIMIC-IV v1.0, which prep does not "
                 "support (use v2.2 or later)")
ERR_V1_CORE = ("{root}: has a core/ folder: this is MIMIC-IV v1.0 (patients and admissions in core/, column "
               "'ethnicity'), which prep does not support (use v2.2 or later)")
ERR_NO_CXR_ROOT = "MIMIC-CXR-JPG root {root}: not found"
ERR_NO_CXR_TABLE = "{path}: MIMIC-CXR-JPG {what} not found under {root}"

CXR_METADATA = "mimic-cxr-2.0.0-metadata.csv"
CXR_CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
CHEXPERT_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)

# name -> DuckDB type of every column prep reads; all other columns are read as VARCHAR.
# Timestamps are read as VARCHAR and cast in SQL (TRY_CAST keeps one parser for both precisions).
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "hosp/patients": {"subject_id": "BIGINT", "gender": "VARCHAR", "anchor_age": "INTEGER",
                      "anchor_year": "INTEGER", "anchor_year_group": "VARCHAR"},
    "hosp/admissions": {"subject_id": "BIGINT", "hadm_id": "BIGINT", "admittime": "VARCHAR",
                        "dischtime": "VARCHAR", "deathtime": "VARCHAR", "admission_type": "VARCHAR",
                        "admission_location": "VARCHAR",
                        "insurance": "VARCHAR", "language": "VARCHAR", "marital_status": "VARCHAR",
                        "race": "VARCHAR", "hospital_expire_flag": "INTEGER"},
    "icu/icustays": {"subject_id": "BIGINT", "hadm_id": "BIGINT", "stay_id": "BIGINT",
                     "intime": "VARCHAR", "outtime": "VARCHAR", "los": "DOUBLE", "first_careunit": "VARCHAR"},
    "hosp/diagnoses_icd": {"hadm_id": "BIGINT", "icd_code": "VARCHAR", "icd_version": "INTEGER"},
    "icu/chartevents": {"stay_id": "BIGINT", "charttime": "VARCHAR", "storetime": "VARCHAR",
                        "itemid": "INTEGER", "value": "VARCHAR", "valuenum": "DOUBLE"},
    "hosp/labevents": {"subject_id": "BIGINT", "charttime": "VARCHAR", "storetime": "VARCHAR",
                       "itemid": "INTEGER", "value": "VARCHAR", "valuenum": "DOUBLE"},
    "icu/outputevents": {"stay_id": "BIGINT", "charttime": "VARCHAR", "storetime": "VARCHAR",
                         "itemid": "INTEGER", "value": "DOUBLE"},
    "hosp/d_labitems": {"itemid": "INTEGER", "fluid": "VARCHAR"},
    "cxr/metadata": {"dicom_id": "VARCHAR", "subject_id": "BIGINT", "study_id": "BIGINT",
                     "ViewPosition": "VARCHAR", "StudyDate": "BIGINT", "StudyTime": "DOUBLE"},
    "cxr/chexpert": {"subject_id": "BIGINT", "study_id": "BIGINT",
                     **{name: "DOUBLE" for name in CHEXPERT_FINDINGS}},
}


@dataclass(frozen=True)
class MimicSource:
    """Where the tables of one MIMIC-IV (+ optional MIMIC-CXR-JPG) download live."""

    root: Path
    version_hint: str | None
    cxr_root: Path | None

    def table(self, name: str) -> Path:
        """Path of ``hosp/<t>`` or ``icu/<t>`` (``.csv.gz`` preferred over ``.csv``)."""
        base = self.root / name
        for candidate in (base.with_name(base.name + ".csv.gz"), base.with_name(base.name + ".csv")):
            if candidate.is_file():
                return candidate
        raise InputFileError(ERR_NO_TABLE.format(path=base, name=base.name))

    def cxr_table(self, filename: str, what: str) -> Path:
        assert self.cxr_root is not None
        for candidate in (self.cxr_root / (filename + ".gz"), self.cxr_root / filename):
            if candidate.is_file():
                return candidate
        raise InputFileError(ERR_NO_CXR_TABLE.format(path=self.cxr_root / (filename + ".gz"), what=what,
                                                     root=self.cxr_root))

    def image_path(self, subject_id: int, study_id: int, dicom_id: str) -> Path:
        assert self.cxr_root is not None
        subject = str(int(subject_id))
        return self.cxr_root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{int(study_id)}" / f"{dicom_id}.jpg"


def locate_source(mimic_root: Path, cxr_root: Path | None) -> MimicSource:
    """Find the folder holding ``hosp/`` and ``icu/`` under ``mimic_root``.

    Accepts that folder itself (``…/mimiciv/<version>/``) or a parent holding exactly one version.
    """
    root = Path(mimic_root).expanduser()
    if not root.is_dir():
        raise InputFileError(ERR_NO_ROOT.format(root=root))
    if not _holds_modules(root):
        inner = sorted(p for p in root.iterdir() if p.is_dir() and _holds_modules(p))
        if not inner:
            raise InputFileError(ERR_NO_MODULES.format(root=root))
        if len(inner) > 1:
            raise InputFileError(ERR_MANY_VERSIONS.format(root=root, found=", ".join(p.name for p in inner)))
        root = inner[0]
    if (root / "core").is_dir():
        raise InputFileError(ERR_V1_CORE.format(root=root))
    hint = root.name if re.fullmatch(r"\d+\.\d+(\.\d+)?", root.name) else None
    cxr = _locate_cxr(Path(cxr_root).expanduser()) if cxr_root is not None else None
    return MimicSource(root=root, version_hint=hint, cxr_root=cxr)


def _locate_cxr(root: Path) -> Path:
    """The MIMIC-CXR-JPG folder holding the metadata file: ``root`` itself or its only version folder."""
    if not root.is_dir():
        raise InputFileError(ERR_NO_CXR_ROOT.format(root=root))
    if _holds_cxr_metadata(root):
        return root
    # only one or two levels down (…/mimic-cxr-jpg/2.0.0): never walk the image tree
    inner = sorted(p for pattern in ("*", "*/*") for p in root.glob(pattern) if p.is_dir() and _holds_cxr_metadata(p))
    if len(inner) == 1:
        return inner[0]
    return root     # the missing metadata file is reported, with its expected path, when it is read


def _holds_cxr_metadata(path: Path) -> bool:
    return any((path / name).is_file() for name in (CXR_METADATA + ".gz", CXR_METADATA))


def _holds_modules(path: Path) -> bool:
    return (path / "hosp").is_dir() and (path / "icu").is_dir()


def connect(memory_limit: str | None, threads: int, spill_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a bounded memory limit (default half the RAM).

    ``spill_dir`` is where DuckDB may spill when a join outgrows the limit; DuckDB removes its files
    when the connection closes.
    """
    con = duckdb.connect(":memory:")
    limit = memory_limit or _half_of_ram()
    try:
        con.execute(f"SET memory_limit = '{_q(limit)}'")
    except duckdb.Error as exc:
        raise ConfigError(f"memory_limit {limit!r}: not a size DuckDB understands ({_first_line(exc)})") from None
    if spill_dir is not None:
        Path(spill_dir).parent.mkdir(parents=True, exist_ok=True)    # DuckDB creates only the last level
        con.execute(f"SET temp_directory = '{_q(str(spill_dir))}'")
    n = threads if threads > 0 else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    con.execute(f"SET threads = {int(n)}")
    con.execute("SET preserve_insertion_order = false")
    return con


def _half_of_ram() -> str:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return f"{max(1, pages // 2 // 2**20)}MB"
    except (ValueError, OSError, AttributeError):
        return "4GB"


def read_header(path: Path) -> list[str]:
    """Column names from the first line of a (gzip) CSV."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            line = fh.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputFileError(ERR_QUERY.format(path=path, detail=exc)) from None
    if not line.strip():
        raise InputFileError(ERR_EMPTY_FILE.format(path=path))
    return _split_header(line)


def _split_header(line: str) -> list[str]:
    return [c.strip() for c in next(csv.reader([line.lstrip("\ufeff").rstrip("\r\n")]))]


def scan_sql(path: Path, table_key: str) -> str:
    """A ``read_csv(...)`` expression for ``path`` with every needed column typed by name.

    Raises :class:`InputFileError` naming the file and the column when a needed column is absent.
    """
    header = read_header(path)
    wanted = TABLE_COLUMNS[table_key]
    if table_key == "hosp/admissions" and "race" not in header and "ethnicity" in header:
        raise InputFileError(ERR_ETHNICITY.format(path=path))
    for column in wanted:
        if column not in header:
            raise InputFileError(ERR_NO_COLUMN.format(path=path, column=column, header=", ".join(header)))
    columns = ", ".join(f"'{_q(c)}': '{wanted.get(c, 'VARCHAR')}'" for c in header)
    return (f"read_csv('{_q(str(path))}', header=true, auto_detect=false, delim=',', quote='\"', "
            f"escape='\"', nullstr='', columns={{{columns}}})")


def checked_scan(con: duckdb.DuckDBPyConnection, path: Path, table_key: str) -> str:
    """:func:`scan_sql` after checking that the table has at least one row (an empty table of a real
    download means a broken extract). Reads only the first lines of the file."""
    scan = scan_sql(path, table_key)
    if not has_data_row(path):
        raise InputFileError(ERR_EMPTY_TABLE.format(path=path))
    return scan


def has_data_row(path: Path) -> bool:
    """Whether a (gzip) CSV has a non-blank line after its header."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            fh.readline()
            for line in fh:
                if line.strip():
                    return True
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputFileError(ERR_QUERY.format(path=path, detail=exc)) from None
    return False


def _q(text: str) -> str:
    return text.replace("'", "''")


READ_ERRORS = (duckdb.ConversionException, duckdb.InvalidInputException, duckdb.IOException)
_CONVERSION = re.compile(r'CSV Error on Line: (\d+).*?converting column "([^"]+)"\. Could not convert string '
                         r'"(.*?)" to \'(\w+)\'', re.S)


def query_df(con: duckdb.DuckDBPyConnection, sql: str, path: Path, params: list | None = None) -> pd.DataFrame:
    """Run ``sql`` and return a DataFrame; DuckDB errors become :class:`InputFileError` naming ``path``."""
    try:
        return con.execute(sql, params or []).df()
    except READ_ERRORS as exc:
        raise read_error(path, exc) from None


def read_error(path: Path, exc: Exception) -> InputFileError:
    """A one-line error naming the file, line, column and value of a DuckDB read failure."""
    match = _CONVERSION.search(str(exc))
    if match:
        line, column, value, kind = match.groups()
        return InputFileError(ERR_READ.format(path=path, column=column,
                                              detail=f"line {line}: value {value!r} is not {kind}"))
    return InputFileError(ERR_QUERY.format(path=path, detail=_first_line(exc)))


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:400]


V2_LANGUAGES = frozenset({"ENGLISH", "?"})
V3_INSURANCE = frozenset({"PRIVATE", "NO CHARGE"})


def detect_version(source: MimicSource, admissions: pd.DataFrame, configured: str) -> str:
    """The MIMIC-IV version, from the values of ``admissions.language`` and ``insurance``.

    v2.x writes language as ``ENGLISH`` or ``?`` and insurance as Medicare / Medicaid / Other; v3.x
    writes full language names (``English``, ``Spanish``, …) and adds the insurance values ``Private``
    and ``No charge``. The values decide the major version; a folder name (``…/mimiciv/3.0``) of the
    same major version refines it (3.0 vs 3.1 cannot be told apart by value; 3.1 is assumed). A folder
    name that contradicts the values is logged and the values win. ``configured`` (``--mimic-version``)
    other than ``auto`` wins over both.
    """
    if configured != "auto":
        return configured
    hint = source.version_hint
    language = {str(v).strip() for v in admissions["language"].dropna() if str(v).strip()}
    insurance = {str(v).strip().upper() for v in admissions["insurance"].dropna()}
    if language & V2_LANGUAGES:
        major = "2"
    elif insurance & V3_INSURANCE or any(v != v.upper() for v in language):
        major = "3"
    else:
        major = None
    if major is None:
        if hint is not None:
            return hint
        log.warning("could not tell the MIMIC-IV version from the admissions values; assuming 2.2 "
                    "(force it with --mimic-version)")
        return "2.2"
    if hint is not None and hint.split(".")[0] == major:
        return hint
    detected = "2.2" if major == "2" else "3.1"
    if hint is not None:
        log.warning("MIMIC-IV folder %s is named %s but its admissions values are those of v%s.x; using %s",
                    source.root, hint, major, detected)
    return detected


def require_rows(df: pd.DataFrame, path: Path) -> None:
    if df.empty:
        raise InputFileError(ERR_EMPTY_TABLE.format(path=path))

