"""`--help` at 80 columns (issue 16, 7): option defaults were missing (the commands pass None and the config
models hold the defaults) and seven option names were cut with "…"."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from mmfair.cli.app import app

COMMANDS = ["prep", "train", "eval-missing", "eval-fair", "report"]


def help_text(command: str, columns: int) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": str(columns), "TERMINAL_WIDTH": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_no_option_name_is_cut_at_80_columns(command):
    text = help_text(command, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert not re.search(r"--[a-z0-9-]+…", text), re.findall(r"--[a-z0-9-]+…", text)


@pytest.mark.parametrize("command, expected", [
    ("train", ["Maximum epochs. [default: 30]", "Hidden size of encoders and heads. [default: 64]",
               "[default: late]", "Learning rate. [default: 0.001]"]),
    ("eval-fair", ["Suppress subgroup cells with n, n_pos or n − n_pos below this. [default: 10]"]),
    ("prep", ["[default: 2000]"]),
])
def test_config_defaults_are_shown(command, expected):
    text = " ".join(help_text(command, 400).split())
    for snippet in expected:
        assert snippet in text


def test_an_option_whose_help_names_its_default_is_left_as_written():
    text = " ".join(help_text("train", 400).split())
    assert "zero (default) or learned" in text and "or learned (MedFuse's learnable token; methods that accept it). [default" not in text


def test_error_messages_are_text_not_markup(tmp_path):
    result = CliRunner().invoke(app, ["--workspace", str(tmp_path), "eval-missing", "--rate", "nan"])
    assert result.exit_code == 2 and "got [nan]" in result.output
