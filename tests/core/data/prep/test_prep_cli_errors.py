"""Bad layouts through the CLI: one error line naming the file and the problem, exit code 2, no output."""

import gzip

import pytest
from typer.testing import CliRunner

from mimic_tree import image_path
from mmfair.cli.app import app

runner = CliRunner()


def rewrite_gz(path, edit):
    with gzip.open(path, "rt") as fh:
        text = fh.read()
    with gzip.open(path, "wt") as fh:
        fh.write(edit(text))


def missing_file(mimic, cxr):
    (mimic / "hosp" / "diagnoses_icd.csv.gz").unlink()
    return r"2\.2/hosp/diagnoses_icd\.csv\.gz: required table not found \(nor diagnoses_icd\.csv beside it\)"


def renamed_column(mimic, cxr):
    rewrite_gz(mimic / "hosp" / "admissions.csv.gz", lambda t: t.replace(",hospital_expire_flag", ",expire_flag", 1))
    return r"admissions\.csv\.gz: required column 'hospital_expire_flag' not found \(header has: subject_id, "


def unreadable_jpeg(mimic, cxr):
    image_path(cxr, 10000001, 50000002, 2).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return r"00000002-00000000-00000000-00000000-00000000\.jpg: cannot decode image"


def empty_table(mimic, cxr):
    rewrite_gz(mimic / "icu" / "chartevents.csv.gz", lambda t: t.splitlines()[0] + "\n")
    return r"chartevents\.csv\.gz: table has no rows"


def empty_file(mimic, cxr):
    (mimic / "hosp" / "d_labitems.csv").write_text("")
    return r"d_labitems\.csv: file is empty \(no header line\)"


def empty_metadata(mimic, cxr):
    rewrite_gz(cxr / "mimic-cxr-2.0.0-metadata.csv.gz", lambda t: t.splitlines()[0] + "\n")
    return r"mimic-cxr-2\.0\.0-metadata\.csv\.gz: table has no rows"


def v1_layout(mimic, cxr):
    (mimic / "core").mkdir()
    return r"core/ folder: this is MIMIC-IV v1\.0"


@pytest.mark.parametrize("damage", [missing_file, renamed_column, unreadable_jpeg, empty_table, empty_file,
                                    empty_metadata, v1_layout])
def test_bad_layout_exits_2_with_one_line_and_no_output(tree, tmp_path, damage):
    import re

    mimic, cxr = tree
    pattern = damage(mimic, cxr)
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["--workspace", str(ws), "prep", "--mimic-root", str(mimic), "--cxr-root", str(cxr),
                                 "--skip-encoder", "--workers", "1"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), result.stderr
    assert "Traceback" not in result.output
    data = ws / "data"
    assert not data.exists() or list(data.iterdir()) == []


def test_good_tree_through_the_cli(tree, tmp_path):
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["--workspace", str(ws), "prep", "--mimic-root", str(tree[0]), "--cxr-root",
                                 str(tree[1]), "--skip-encoder", "--workers", "1", "--variables", "extended"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (ws / "data").iterdir()} >= {"cohort.csv", "features.h5", "attrition.csv",
                                                         "variable_coverage.csv", "prep.json"}
