"""Patient-level, mortality-stratified fold assignment (``assign_folds``), on cohorts small enough to check by eye."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from mmfair.core.data.cohort import assign_folds
from mmfair.core.errors import ConfigError


def _cohort(subjects, mortality):
    return pd.DataFrame({"subject_id": subjects, "mortality": mortality})


def test_as_many_subjects_as_folds_puts_each_subject_in_its_own_fold():
    # 3 subjects, 3 folds: subject 1's three stays share a fold, subjects 2 and 3 take the other two
    folds = assign_folds(_cohort([1, 1, 1, 2, 3], [0, 0, 0, 1, 0]), 3, 0)
    assert folds.dtype.kind == "i"
    assert folds[0] == folds[1] == folds[2]
    assert sorted({folds[0], folds[3], folds[4]}) == [0, 1, 2]


def test_fewer_subjects_than_folds_is_a_config_error_naming_both_counts():
    cohort = _cohort([1, 1, 2], [0, 1, 0])  # 3 stays but 2 patients
    with pytest.raises(ConfigError) as err:
        assign_folds(cohort, 3, 0)
    assert str(err.value) == ("the cohort has 2 patients, fewer than n_folds=3; lower n_folds or widen the cohort")


@pytest.mark.parametrize("n_folds", [1, 0])
def test_fewer_than_two_folds_is_a_config_error_not_sklearns_value_error(n_folds):
    with pytest.raises(ConfigError, match=f"n_folds must be at least 2 .*got {n_folds}$"):
        assign_folds(_cohort([1, 2, 3], [0, 1, 0]), n_folds, 0)


def test_two_folds_the_fewest_allowed_split_the_patients_in_two():
    folds = assign_folds(_cohort([1, 1, 2, 3, 4], [0, 0, 1, 0, 1]), 2, 0)
    assert folds[0] == folds[1] and sorted(set(folds.tolist())) == [0, 1]


def test_every_stay_gets_a_fold_and_the_seed_decides_which():
    subjects = np.repeat(np.arange(12), [1, 2] * 6)  # 18 stays
    mortality = (subjects % 3 == 0).astype(int)
    cohort = _cohort(subjects, mortality)
    a, b = assign_folds(cohort, 3, 7), assign_folds(cohort, 3, 7)
    assert np.array_equal(a, b)  # reproducible
    assert set(a.tolist()) == {0, 1, 2}
    assert (pd.Series(a).groupby(subjects).nunique() == 1).all()  # patient-level
    others = [assign_folds(cohort, 3, s) for s in range(8, 12)]
    assert any(not np.array_equal(a, o) for o in others)  # shuffled with the seed


def test_a_stratification_warning_is_logged_not_raised(caplog):
    # one death among 6 patients cannot be spread over 3 folds: scikit-learn warns, the log says so
    cohort = _cohort([1, 2, 3, 4, 5, 6], [1, 0, 0, 0, 0, 0])
    with caplog.at_level(logging.WARNING, logger="mmfair.core.data.cohort"):
        folds = assign_folds(cohort, 3, 0)
    assert np.bincount(folds).tolist() == [2, 2, 2]
    messages = [r.getMessage() for r in caplog.records if r.name == "mmfair.core.data.cohort"]
    assert messages == ["fold assignment: The least populated class in y has only 1 members, which is less "
                        "than n_splits=3."]
