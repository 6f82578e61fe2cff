"""`mmfair train` options of the missing-modality work: modality subsets, method hyperparameters, cohorts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mmfair.cli.app import app


@pytest.fixture
def captured(monkeypatch):
    from mmfair.core import pipeline

    seen = []

    def fake_train(configs, workspace, bootstrap, progress):
        seen.extend(configs)
        raise pipeline.InputFileError("stop here")

    monkeypatch.setattr(pipeline, "train", fake_train)
    return seen


def invoke(tmp_path, *args):
    return CliRunner().invoke(app, ["--workspace", str(tmp_path / "ws"), "train", *args])


def test_modality_subsets_train_the_unimodal_models_and_the_fusion(tmp_path, captured):
    result = invoke(tmp_path, "--fusion", "late", "--modalities", "ehr", "--modalities", "cxr",
                    "--modalities", "ehr,cxr")
    assert result.exit_code == 2 and "stop here" in result.output
    assert [c.fusion for c in captured] == ["ehr", "cxr", "late"]


def test_bad_modality_subset_is_named(tmp_path, captured):
    result = invoke(tmp_path, "--fusion", "late", "--modalities", "ehr,notes")
    assert result.exit_code == 2 and "ehr,notes" in result.output and not captured


def test_fusion_params_and_missing_options_reach_the_config(tmp_path, captured):
    result = invoke(tmp_path, "--fusion", "early", "--fusion-param", "depth=2", "--fusion-param", "gate=0.5",
                    "--missing-token", "learned", "--modality-dropout", "0.3", "--train-cohort", "full",
                    "--split", "temporal")
    assert result.exit_code == 2
    (config,) = captured
    assert config.fusion_params == {"depth": 2, "gate": 0.5}
    assert (config.missing_token, config.modality_dropout, config.split) == ("learned", 0.3, "temporal")


@pytest.mark.parametrize("args, needle", [
    (["--fusion-param", "depth"], "KEY=VALUE"),
    (["--missing-token", "sometimes"], "missing_token"),
    (["--train-cohort", "paired"], "train_cohort"),
    (["--modality-dropout", "1.5"], "modality_dropout"),
])
def test_invalid_values_exit_2_naming_the_option(tmp_path, captured, args, needle):
    result = invoke(tmp_path, "--fusion", "early", *args)
    assert result.exit_code == 2 and needle in result.output and not captured


def test_image_mode_options_reach_the_config(tmp_path, captured):
    weights = tmp_path / "w.pth"
    result = invoke(tmp_path, "--fusion", "mmtm", "--cxr-input", "images", "--cxr-weights", str(weights),
                    "--image-size", "64", "--no-image-augment", "--compile")
    assert result.exit_code == 2
    (config,) = captured
    assert (config.cxr_input, config.cxr_weights, config.image_size, config.image_augment, config.compile) == (
        "images", weights, 64, False, True)


def test_static_adds_the_whitelist_defaults_and_named_fields(tmp_path, captured):
    result = invoke(tmp_path, "--fusion", "late", "--static", "--static-field", "gender")
    assert result.exit_code == 2
    (config,) = captured
    assert config.static_fields == ("age", "admission_type", "admission_location", "first_careunit", "gender")


def test_modality_subsets_with_static(tmp_path, captured):
    result = invoke(tmp_path, "--fusion", "late", "--modalities", "ehr", "--modalities", "ehr,static",
                    "--modalities", "ehr,cxr,static")
    assert result.exit_code == 2
    defaults = ("age", "admission_type", "admission_location", "first_careunit")
    assert [(c.fusion, c.static_fields) for c in captured] == [("ehr", ()), ("ehr", defaults), ("late", defaults)]
    assert all(c.hourly_ehr for c in captured)


def test_every_subset_of_ehr_cxr_static_trains(tmp_path, captured):
    subsets = ["ehr", "cxr", "static", "ehr,cxr", "ehr,static", "cxr,static", "ehr,cxr,static"]
    result = invoke(tmp_path, "--fusion", "late", "--static-field", "age",
                    *[arg for s in subsets for arg in ("--modalities", s)])
    assert result.exit_code == 2 and "stop here" in result.output
    got = [(c.fusion, c.static_fields, c.hourly_ehr) for c in captured]
    assert got == [("ehr", (), True), ("cxr", (), True), ("ehr", ("age",), False), ("late", (), True),
                   ("ehr", ("age",), True), ("late", ("age",), False), ("late", ("age",), True)]


@pytest.mark.parametrize("value", ["static,notes", ",", "EHR"])
def test_unknown_or_empty_modality_subset_is_refused_in_one_line(tmp_path, captured, value):
    result = invoke(tmp_path, "--fusion", "late", "--modalities", "ehr", "--modalities", value)
    assert result.exit_code == 2 and not captured
    line = next(x for x in result.output.splitlines() if "--modalities" in x)
    assert f"'{value}'" in line and "ehr, cxr, static" in line
