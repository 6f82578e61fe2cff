"""Checkpoint selection rules (issue 7): overall, worst_group, pareto, dto — on validation only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mmfair.core.config import TrainConfig
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training import runs as runs_module
from mmfair.core.training.runs import compute_run_id, read_predictions_text
from mmfair.core.training.selection import choose_epochs

CONFIGS = {
    "default": TrainConfig(),
    "group-dro": TrainConfig(fusion="early", modulator="group-dro"),
    "embedding": TrainConfig(cxr_embedding="enc"),
}


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "patience": 2, "hidden_dim": 16, "batch_size": 32, "device": "cpu", **kw})


def history() -> pd.DataFrame:
    """Epoch 2 wins on validation AUPRC; epoch 3 has the best worst group; epoch 4 the best ASIAN AUROC."""
    return pd.DataFrame({
        "epoch": [1, 2, 3, 4, 5],
        "train_loss": [0.7, 0.6, 0.5, 0.45, 0.4],
        "val_auroc": [0.75, 0.85, 0.80, 0.82, 0.70],
        "val_auprc": [0.40, 0.60, 0.50, 0.55, 0.30],
        "val_auroc[race_group=WHITE]": [0.80, 0.90, 0.82, 0.85, 0.70],
        "val_auroc[race_group=BLACK]": [0.60, 0.62, 0.75, 0.66, 0.74],
        "val_auroc[race_group=ASIAN]": [0.70, 0.60, 0.70, 0.79, 0.60],
        "val_auroc[race_group=OTHER]": [0.50, np.nan, 0.99, 0.99, 0.99],  # undefined at an epoch: left out
        "val_auroc[gender=F]": [0.10, 0.10, 0.10, 0.10, 0.99],  # another attribute: ignored
    })  # fmt: skip


def test_rules_choose_from_a_hand_written_history():
    h = history()
    overall = int(h.loc[h["val_auprc"].idxmax(), "epoch"])
    chosen = choose_epochs(h, ("overall", "worst_group", "pareto", "dto"), "race_group", overall)
    assert chosen["overall"] == overall == 2
    # worst group per epoch: 0.60, 0.60, 0.70, 0.66, 0.60 -> epoch 3, although AUPRC prefers epoch 2
    assert chosen["worst_group"] == 3
    # Pareto front {2, 3, 4} (1 and 5 are dominated by 3); ASIAN is worst at the overall epoch 2 -> epoch 4
    assert chosen["pareto"] == 4
    # dto by the formula: columns divided by their max over epochs, L2 distance to (1, 1, 1)
    a = h[["val_auroc[race_group=WHITE]", "val_auroc[race_group=BLACK]", "val_auroc[race_group=ASIAN]"]].to_numpy()
    dist = np.sqrt(((1 - a / a.max(axis=0)) ** 2).sum(axis=1))
    assert chosen["dto"] == int(h["epoch"].iloc[int(np.argmin(dist))]) == 4


def test_worst_group_ties_go_to_the_earlier_epoch_and_no_groups_fall_back_to_overall():
    h = history()
    h["val_auroc[race_group=BLACK]"] = [0.6, 0.9, 0.9, 0.9, 0.9]
    h["val_auroc[race_group=ASIAN]"] = [0.6, 0.9, 0.9, 0.9, 0.9]
    h["val_auroc[race_group=WHITE]"] = [0.6, 0.9, 0.9, 0.9, 0.9]
    assert choose_epochs(h, ("worst_group",), "race_group", 5)["worst_group"] == 2
    assert choose_epochs(h, ("worst_group", "dto", "pareto"), "insurance_group", 5) == {
        "worst_group": 5, "dto": 5, "pareto": 5}


def test_selection_rules_are_validated_and_ordered():
    assert TrainConfig(selection_rules=["dto", "worst_group", "dto"]).selection_rules == ("worst_group", "dto")
    with pytest.raises(ValueError, match="unknown selection rule"):
        TrainConfig(selection_rules=["best_test"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rules_and_their_attribute_enter_the_run_id(name):
    cfg = CONFIGS[name]
    known = compute_run_id(cfg, "fp0")
    with_rules = compute_run_id(cfg.model_copy(update={"selection_rules": ("worst_group",)}), "fp0")
    assert with_rules != known
    # the rules compare fair_attr's groups, so it enters the id once rules are asked
    other_attr = cfg.model_copy(update={"selection_rules": ("worst_group",), "fair_attr": "gender"})
    assert compute_run_id(other_attr, "fp0") != with_rules


def test_train_run_writes_each_rule_on_its_chosen_epoch(tiny_ws, monkeypatch):
    outcomes = []
    real_fit = runs_module.fit

    def spy(*args, **kw):
        outcomes.append(real_fit(*args, **kw))
        return outcomes[-1]

    monkeypatch.setattr(runs_module, "fit", spy)
    # the tiny workspace's validation groups are below the small-cell minimum of 10 (which would leave no
    # group column to select on): lower it so the rules have groups here
    monkeypatch.setattr("mmfair.core.training.selection.MIN_GROUP_SIZE", 1)
    rules = ("overall", "worst_group", "pareto", "dto")
    cfg = config(fusion="early", epochs=4, patience=10, selection_rules=rules)
    result = train_run(cfg, tiny_ws)
    run_dir = result.run_dir
    info = json.loads((run_dir / "config.json").read_text())
    chosen = info["selection_epochs"]
    assert set(chosen) == set(rules) and chosen["overall"] == info["best_epoch"]
    # chosen from history.csv alone, which holds validation metrics only
    hist = pd.read_csv(run_dir / "history.csv")
    assert not any("test" in c for c in hist.columns)
    assert any(c.startswith("val_auroc[race_group=") for c in hist.columns)
    assert choose_epochs(hist, rules, "race_group", info["best_epoch"]) == chosen
    assert not (run_dir / "predictions_test_overall.csv").exists()  # overall is the default file
    assert set(outcomes[0].epoch_states) == {1, 2, 3, 4}

    run = load_run(run_dir)
    default_test = read_predictions_text(run_dir / "predictions_test.csv")
    for rule in ("worst_group", "pareto", "dto"):
        state = outcomes[0].epoch_states[chosen[rule]]
        run.model.load_state_dict(state)
        for split in ("val", "test"):
            saved = read_predictions_text(run_dir / f"predictions_{split}_{rule}.csv")
            assert list(saved.columns) == list(default_test.columns)
            pd.testing.assert_frame_equal(predict(run, split), saved)

    # the default files and weights are those of a run without rules (a different run id)
    plain = train_run(config(fusion="early", epochs=4, patience=10), tiny_ws)
    assert plain.run_id != result.run_id
    assert not list(plain.run_dir.glob("predictions_*_*.csv"))
    assert "selection_epochs" not in json.loads((plain.run_dir / "config.json").read_text())
    for split in ("val", "test"):
        pd.testing.assert_frame_equal(pd.read_csv(plain.run_dir / f"predictions_{split}.csv"),
                                      pd.read_csv(run_dir / f"predictions_{split}.csv"))
    a = torch.load(plain.run_dir / "model.pt", weights_only=True)
    b = torch.load(run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fair_attr_outside_the_history_attributes_is_added_when_rules_are_asked(tiny_ws):
    result = train_run(config(fusion="ehr", epochs=2, selection_rules=("worst_group",), fair_attr="admission_type"),
                       tiny_ws)  # fmt: skip
    hist = pd.read_csv(result.run_dir / "history.csv")
    assert any(c.startswith("val_auroc[admission_type=") for c in hist.columns)
    assert (result.run_dir / "predictions_test_worst_group.csv").exists()


def test_cli_selection_option_reaches_the_config(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mmfair.cli.app import app
    from mmfair.core import pipeline

    seen = []

    def fake_train(configs, workspace, bootstrap, progress):
        seen.extend(configs)
        raise pipeline.InputFileError("stop here")

    monkeypatch.setattr(pipeline, "train", fake_train)
    runner = CliRunner()
    ws = ["--workspace", str(tmp_path)]
    result = runner.invoke(app, [*ws, "train", "--selection", "pareto", "--selection", "worst_group"])
    assert result.exit_code == 2 and seen[0].selection_rules == ("worst_group", "pareto")
    result = runner.invoke(app, [*ws, "train"])
    assert seen[-1].selection_rules == ()
    result = runner.invoke(app, [*ws, "train", "--selection", "best_test"])
    assert result.exit_code == 2 and "unknown selection rule" in result.output


class _Interrupt(Exception):
    pass


def test_interrupted_run_with_rules_resumes_to_the_same_files(tiny_ws, tmp_path):
    from tiny_workspace import build_tiny_workspace

    cfg = config(fusion="ehr", epochs=3, patience=10, selection_rules=("worst_group", "dto"))
    reference = train_run(cfg, build_tiny_workspace(tmp_path / "other"))

    def stop_after_two(description, done, total):
        if done == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_run(cfg, tiny_ws, progress=stop_after_two)
    resumed = train_run(cfg, tiny_ws)
    assert json.loads((resumed.run_dir / "config.json").read_text())["selection_epochs"] == \
        json.loads((reference.run_dir / "config.json").read_text())["selection_epochs"]
    for rule in ("worst_group", "dto"):
        pd.testing.assert_frame_equal(pd.read_csv(resumed.run_dir / f"predictions_test_{rule}.csv"),
                                      pd.read_csv(reference.run_dir / f"predictions_test_{rule}.csv"))


def test_the_protocol_version_enters_the_run_id(monkeypatch):
    import mmfair.core.training.runs as runs

    before = compute_run_id(TrainConfig(), "fp0")
    monkeypatch.setattr(runs, "PROTOCOL_VERSION", runs.PROTOCOL_VERSION + 1)
    assert compute_run_id(TrainConfig(), "fp0") != before  # a run of an older protocol is never reused as done
