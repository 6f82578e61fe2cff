"""`train` refuses bad configs in one line, exit 2, before any run folder exists (issue 16, 4 and 7):
``--fusion healnet --fusion-param heads=3`` gave a traceback and an empty run folder; ``--fusion multifair``
after an EHR-only prep named the base method ('early') instead of the one asked for."""

from __future__ import annotations

import h5py
import pytest
from typer.testing import CliRunner

from mmfair.cli.app import app
from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.training import train_run


def train_cli(ws, *args):
    return CliRunner().invoke(app, ["--workspace", str(ws.root), "train", "--epochs", "1", *args])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.output
    return lines[0]


def test_healnet_heads_must_divide_hidden_dim_before_any_run_folder(tiny_ws):
    line = one_line_error(train_cli(tiny_ws, "--fusion", "healnet", "--fusion-param", "heads=3"))
    assert "heads (3) must divide hidden_dim (64)" in line
    assert not tiny_ws.runs.exists() or not any(tiny_ws.runs.iterdir())


def test_every_config_is_checked_before_the_first_run_trains(tiny_ws):
    from mmfair.core import pipeline

    good = TrainConfig(fusion="ehr", epochs=1, device="cpu")
    bad = TrainConfig(fusion="healnet", epochs=1, device="cpu", fusion_params={"heads": 3})
    with pytest.raises(ConfigError, match="must divide hidden_dim"):
        pipeline.train([good, bad], tiny_ws, bootstrap=0)
    assert not tiny_ws.runs.exists() or not any(tiny_ws.runs.iterdir())  # not even the valid ehr run


def test_heads_that_divide_a_given_hidden_dim_are_accepted():
    from mmfair.core.training.methods import resolve_method

    resolve_method(TrainConfig(fusion="healnet", hidden_dim=48, fusion_params={"heads": 3}))
    with pytest.raises(ConfigError, match=r"heads \(4\) must divide hidden_dim \(6\)"):
        resolve_method(TrainConfig(fusion="healnet", hidden_dim=6, fusion_params={"heads": 4}))


def test_a_preset_after_an_ehr_only_prep_is_named_as_asked(tiny_ws):
    with h5py.File(tiny_ws.features_h5, "a") as f:
        del f["cxr/embeddings/test-enc"]
    with pytest.raises(ConfigError) as info:
        train_run(TrainConfig(fusion="multifair", epochs=1, device="cpu"), tiny_ws)
    assert str(info.value).startswith("fusion 'multifair' (method 'early' with modulator 'multifair') needs CXR")
    assert not tiny_ws.runs.exists() or not any(tiny_ws.runs.iterdir())
    line = one_line_error(train_cli(tiny_ws, "--fusion", "multifair"))
    assert "fusion 'multifair'" in line and "needs CXR embeddings" in line
