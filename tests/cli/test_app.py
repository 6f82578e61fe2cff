"""CLI wiring: help, option validation, errors as one line with exit code 2 (never a traceback)."""

import pytest
from typer.testing import CliRunner

from mmfair.cli.app import app

runner = CliRunner()
COMMANDS = ["prep", "train", "eval-missing", "eval-fair", "report", "list"]


def invoke(*args, workspace=None):
    argv = (["--workspace", str(workspace)] if workspace else []) + list(args)
    return runner.invoke(app, argv)


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_unknown_option_exits_2():
    result = invoke("train", "--no-such-option")
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_cxr_root_without_mimic_root_is_refused(tmp_path):
    result = invoke("prep", "--cxr-root", str(tmp_path), workspace=tmp_path / "ws")
    assert result.exit_code == 2
    assert "--cxr-root needs --mimic-root" in result.output
    assert "Traceback" not in result.output


def test_config_file_typo_names_the_key(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("hiden_dim: 3\n")
    result = invoke("train", "--config", str(cfg), workspace=tmp_path / "ws")
    assert result.exit_code == 2
    assert "hiden_dim" in result.output


def test_invalid_value_names_the_field(tmp_path):
    result = invoke("eval-missing", "--rate", "1.5", workspace=tmp_path / "ws")
    assert result.exit_code == 2
    assert "[0, 1]" in result.output


def test_missing_config_file_is_named(tmp_path):
    result = invoke("train", "--config", str(tmp_path / "nope.yaml"), workspace=tmp_path / "ws")
    assert result.exit_code == 2
    assert "nope.yaml" in result.output


@pytest.mark.parametrize("command", ["train", "eval-missing", "eval-fair"])
def test_commands_before_prep_say_what_to_run(command, tmp_path):
    result = invoke(command, workspace=tmp_path / "ws")
    assert result.exit_code == 2
    assert "mmfair prep" in result.output or "mmfair train" in result.output
    assert "Traceback" not in result.output


def test_report_without_results_says_what_to_run(tmp_path):
    result = invoke("report", workspace=tmp_path / "ws")
    assert result.exit_code == 2
    assert "mmfair train" in result.output


def test_unknown_fusion_lists_the_available_ones(tmp_path):
    result = invoke("train", "--fusion", "nonsense", workspace=tmp_path / "ws")
    assert result.exit_code == 2
    assert "Unknown fusion method 'nonsense'" in result.output
    assert "late" in result.output


def test_list_shows_methods_with_papers():
    result = invoke("list", "fusions")
    assert result.exit_code == 0
    for name in ("ehr", "cxr", "late", "early"):
        assert name in result.output


def test_list_rejects_unknown_kind():
    result = invoke("list", "widgets")
    assert result.exit_code == 2


def test_repeatable_options_build_one_config_each(monkeypatch, tmp_path):
    from mmfair.core import pipeline

    seen = []

    def fake_train(configs, workspace, bootstrap, progress):
        seen.extend(configs)
        raise pipeline.InputFileError("stop here")

    monkeypatch.setattr(pipeline, "train", fake_train)
    result = invoke("train", "--fusion", "late", "--fusion", "early", "--seed", "1", "--seed", "2", workspace=tmp_path)
    assert result.exit_code == 2
    assert sorted((c.fusion, c.seed) for c in seen) == [("early", 1), ("early", 2), ("late", 1), ("late", 2)]


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert "mmfair" in result.output
