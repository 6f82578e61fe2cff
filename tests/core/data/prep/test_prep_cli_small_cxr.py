"""`mmfair prep` on a CXR tree too small to train the encoder (issue 16 §4): the real encoder falls back to a
random init, every held-out AUROC is undefined, and the CLI still renders its table (it crashed formatting
``None``)."""

import json

from typer.testing import CliRunner

from mmfair.cli.app import app


def test_random_init_fallback_renders_and_exits_0(tree, tmp_path):
    mimic, cxr = tree
    ws = tmp_path / "ws"
    argv = ["--workspace", str(ws), "prep", "--mimic-root", str(mimic), "--cxr-root", str(cxr),
            "--cxr-encoder", "test_resnet", "--workers", "1", "--encoder-steps", "3"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    summary = json.loads((ws / "data" / "prep.json").read_text())
    assert summary["config"]["encoder_max_steps"] == 3 and summary["config"]["encoder_time_budget_s"] is None
    encoder = summary["encoder"]
    assert encoder["random_init"] is True
    assert encoder["heldout_auroc"] and all(v is None for v in encoder["heldout_auroc"].values())
    assert "random-init fallback" in result.output and "n/a" in result.output
    assert encoder["card"]["pretraining_data"] == "none (random init)"
