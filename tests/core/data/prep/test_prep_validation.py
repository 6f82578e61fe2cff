"""Input validation with named counts (issue 16 item 3): impossible times are reported per file and reason,
excluded under their own attrition step and warned about; a type error names the file it is in."""

import json
import logging

import pandas as pd
import pytest

from mmfair.core.config import PrepConfig
from mmfair.core.data.cohort import apply_filters
from mmfair.core.data.prep import run_prep
from mmfair.core.errors import InputFileError
from mmfair.core.workspace import Workspace
from test_prep_errors import config_for, rewrite_gz  # one tree editor for the prep error tests


def test_icu_stay_with_swapped_times_is_counted_warned_and_excluded_under_its_own_step(tree, tmp_path, caplog):
    # stay 30000007 (15 d) with intime and outtime swapped: not "under 48 h" but an impossible record
    rewrite_gz(tree[0] / "icu" / "icustays.csv.gz", lambda t: t.replace(
        "2150-07-01 06:00:00,2150-07-16 06:00:00,15.0", "2150-07-16 06:00:00,2150-07-01 06:00:00,15.0"))
    ws = Workspace.resolve(tmp_path / "ws")
    with caplog.at_level(logging.WARNING):
        result = run_prep(config_for(tree), ws)
    attrition = result.attrition.set_index("step")
    assert attrition.loc["ICU outtime not before intime", "removed"] == 1
    assert attrition.loc["ICU stay >= 48 h", "removed"] == 1          # only the 30-hour stay, as before
    assert result.n_stays == 8
    assert 30000007 not in pd.read_csv(ws.cohort_csv)["stay_id"].tolist()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "icu/icustays: 1 rows with outtime before intime (excluded from the cohort; see attrition.csv)" in warnings
    summary = json.loads((ws.data / "prep.json").read_text())
    assert summary["input_problems"] == [{"file": "icu/icustays", "reason": "rows with outtime before intime",
                                          "rows": 1}]


def test_clean_tree_reports_no_input_problem(prepped):
    summary = json.loads((prepped[0].data / "prep.json").read_text())
    assert summary["input_problems"] == []


@pytest.mark.parametrize("table, column, old, new", [
    ("patients", "anchor_age", "10000003,F,50,", "10000003,F,fifty,"),
    ("admissions", "hospital_expire_flag", "AMERICAN INDIAN/ALASKA NATIVE,,,0", "AMERICAN INDIAN/ALASKA NATIVE,,,no"),
])
def test_type_error_names_the_file_it_is_in(tree, tmp_path, table, column, old, new):
    rewrite_gz(tree[0] / "hosp" / f"{table}.csv.gz", lambda t: t.replace(old, new, 1))
    with pytest.raises(InputFileError, match=rf"{table}\.csv\.gz: cannot read column '{column}'") as caught:
        run_prep(config_for(tree), Workspace.resolve(tmp_path / "ws"))
    assert "icustays" not in str(caught.value)


def _stays(n: int, donors: int, swapped: int = 0) -> pd.DataFrame:
    """``n`` valid 3-day ICU stays; the first ``donors`` in admissions ending before they begin, the last
    ``swapped`` with outtime before intime."""
    intime = pd.Series(pd.Timestamp("2150-01-01 10:00"), index=range(n))
    outtime = intime + pd.Timedelta(days=3)
    outtime.iloc[n - swapped:] = intime.iloc[n - swapped:] - pd.Timedelta(days=3)
    admittime = intime - pd.Timedelta(hours=2)
    dischtime = outtime + pd.Timedelta(days=1)
    dischtime.iloc[:donors] = admittime.iloc[:donors] - pd.Timedelta(hours=1)
    return pd.DataFrame({"stay_id": range(n), "subject_id": range(n), "a_hadm_id": range(n), "p_subject_id": range(n),
                         "intime": intime, "outtime": outtime, "admittime": admittime, "dischtime": dischtime,
                         "anchor_age": 50, "anchor_year": 2150})


DONOR_STEP = "admission length > 0 (dischtime after admittime; organ-donor pseudo-admissions)"


@pytest.mark.parametrize("n, donors, warned", [(1000, 10, False), (1000, 11, True), (100, 9, False)])
def test_organ_donor_step_warns_only_far_above_the_usual_rate(n, donors, warned, caplog):
    # warning above 1 % of all ICU stays and at least 10 of them (hand-counted: 10/1000 = 1 % is not above it)
    with caplog.at_level(logging.WARNING):
        cohort, attrition, problems = apply_filters(_stays(n, donors), PrepConfig())
    assert attrition.set_index("step").loc[DONOR_STEP, "removed"] == donors and len(cohort) == n - donors
    assert problems == []
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("organ-donor" in m and f"{donors} ICU stays" in m for m in messages) == warned


def test_swapped_stays_are_not_counted_as_short_or_as_donors(caplog):
    with caplog.at_level(logging.WARNING):
        cohort, attrition, problems = apply_filters(_stays(20, donors=0, swapped=3), PrepConfig())
    removed = attrition.set_index("step")["removed"]
    assert removed["ICU outtime not before intime"] == 3
    assert removed["ICU stay >= 48 h"] == 0 and removed[DONOR_STEP] == 0
    assert problems == [{"file": "icu/icustays", "reason": "rows with outtime before intime", "rows": 3}]
    assert len(cohort) == 17
