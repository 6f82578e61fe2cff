"""Small pieces of prep: maps, matchers, bins."""

import numpy as np
import pandas as pd
import pytest

from mmfair.core.data.cohort import load_group_maps, los_class, map_group
from mmfair.core.data.phenotypes import PhenotypeMatcher, load_phenotypes
from mmfair.core.data.timeseries import gcs_total
from mmfair.core.data.variables import load_variable_map
from mmfair.core.errors import ConfigError


def test_race_map_covers_the_mimic_vocabulary():
    rules = load_group_maps()["race"]
    raw = pd.Series(["WHITE", "WHITE - BRAZILIAN", "PORTUGUESE", "BLACK/AFRICAN", "HISPANIC OR LATINO",
                     "HISPANIC/LATINO - COLUMBIAN", "SOUTH AMERICAN", "ASIAN - ASIAN INDIAN", "UNKNOWN",
                     "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER", "MULTIPLE RACE/ETHNICITY",
                     "NATIVE HAWAIIAN OR OTHER PACIFIC ISLANDER", "OTHER", ""])
    assert map_group(raw, rules).tolist() == [
        "WHITE", "WHITE", "WHITE", "BLACK", "HISPANIC", "HISPANIC", "HISPANIC", "ASIAN", "UNKNOWN", "UNKNOWN",
        "UNKNOWN", "OTHER", "OTHER", "OTHER", "UNKNOWN"]


def test_insurance_and_language_maps_for_both_versions():
    maps = load_group_maps()
    insurance = pd.Series(["Medicare", "Medicaid", "Other", "Private", "No charge", ""])
    assert map_group(insurance, maps["insurance"]).tolist() == [
        "Medicare", "Medicaid", "Other", "Private", "Other", "Other"]
    language = pd.Series(["ENGLISH", "?", "English", "Spanish", ""])
    assert map_group(language, maps["language"]).tolist() == ["English", "Other", "English", "Other", "Other"]


def test_los_class_edges_are_left_closed():
    los = np.array([2.0, 2.99, 3.0, 4.5, 5.0, 6.0, 7.0, 13.99, 14.0, 100.0])
    assert los_class(los).tolist() == [0, 0, 1, 2, 3, 4, 5, 5, 6, 6]


def test_phenotype_order_and_icd_modes():
    phenotypes = load_phenotypes()
    assert len(phenotypes) == 25 and phenotypes[0].slug == "acute_renal_failure"
    slug = {k: p.slug for k, p in enumerate(phenotypes)}
    extended, exact = PhenotypeMatcher(phenotypes, "extended"), PhenotypeMatcher(phenotypes, "exact")
    assert {slug[k] for k in exact.groups_of(9, "0389")} == {"septicemia"}
    assert exact.groups_of(9, "389") == set()                     # the leading zero matters
    assert exact.groups_of(10, "I480") == set()
    assert {slug[k] for k in extended.groups_of(10, "I480")} == {"cardiac_dysrhythmias"}
    assert {slug[k] for k in extended.groups_of(10, "I213")} == {"acute_myocardial_infarction"}
    assert extended.groups_of(9, "I480") == set()                 # the category rule is ICD-10 only
    with pytest.raises(ConfigError):
        PhenotypeMatcher(phenotypes, "fuzzy")


def test_label_matrix_uses_version_and_code():
    matcher = PhenotypeMatcher(load_phenotypes(), "extended")
    diagnoses = pd.DataFrame({"hadm_id": [1, 1, 2, 3], "icd_version": [9, 10, 10, 9],
                              "icd_code": ["0389", "J9601", "5849", "5849"]})
    labels = matcher.label_matrix(diagnoses, np.array([1, 2, 3, 4]))
    cols = matcher.columns
    assert labels[0, cols.index("pheno_septicemia")] == 1 and labels[0, cols.index("pheno_respiratory_failure")] == 1
    assert labels[1].sum() == 0 and labels[3].sum() == 0
    assert labels[2, cols.index("pheno_acute_renal_failure")] == 1


def test_gcs_total_rule():
    eye, verbal, motor = (np.array(x, dtype=np.float32) for x in
                          ([4, 4, np.nan, 1], [5, 0, 3, np.nan], [6, 5, 6, 1]))
    total = gcs_total(eye, verbal, motor)
    assert total[0] == 15 and total[1] == 15 and np.isnan(total[2]) and np.isnan(total[3])


def test_variable_map_standard_and_bad_files(tmp_path):
    vmap = load_variable_map("standard")
    assert len(vmap.names) == 18 and vmap.names[-1] == "sao2"
    lab_sources = [s for v in vmap.variables for s in v.sources if s.table == "labevents"]
    assert {s.itemid for s in lab_sources} == {50931, 50809, 50820, 50817}
    assert all(s.fluid == "Blood" for s in lab_sources)
    with pytest.raises(ConfigError, match="neither a packaged map"):
        load_variable_map("nope")
    bad = tmp_path / "vars.yaml"
    bad.write_text("variables:\n  - {name: hr, group: vitals, valid: [0, 1], sources: [{table: outputs, itemid: 1}]}\n")
    with pytest.raises(ConfigError, match="vars.yaml: variable 'hr': source table 'outputs'"):
        load_variable_map(str(bad))


def test_event_joins_keep_the_written_order_and_restore_the_setting():
    import duckdb

    from mmfair.core.data.timeseries import _joins_as_written

    con = duckdb.connect()
    con.execute("SET disabled_optimizers = 'compressed_materialization'")
    with _joins_as_written(con):
        inside = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0]
    assert "join_order" in inside
    assert con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0] == "compressed_materialization"
