"""Issue 15: a method is resolved once into a MethodSpec (presets are specs of their own name), `mmfair train` asks
the registries for each name once, its grid lives in the library, and a threshold rule has one parser."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from mmfair.cli.app import app
from mmfair.core.config import EvalFairConfig, TrainConfig, TrainPlan
from mmfair.core.errors import ConfigError
from mmfair.core.evaluation.thresholds import ThresholdRule, choose_threshold, parse_rule
from mmfair.core.registry import FUSIONS, MODULATORS
from mmfair.core.training.methods import resolve_method
from mmfair.core.training.plan import train_configs


def counting(monkeypatch, registry) -> Counter:
    calls: Counter = Counter()
    entry = registry.entry

    def counted(name):
        calls[name] += 1
        return entry(name)

    monkeypatch.setattr(registry, "entry", counted)
    return calls


def test_train_looks_each_method_name_up_once(tiny_ws, monkeypatch):
    fusions, modulators = counting(monkeypatch, FUSIONS), counting(monkeypatch, MODULATORS)
    args = ["--workspace", str(tiny_ws.root), "train", "--fusion", "late", "--fusion", "multifair", "--fold", "0",
            "--seed", "0", "--seed", "1", "--epochs", "1", "--hidden-dim", "8", "--batch-size", "64",
            "--device", "cpu", "--bootstrap", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # four runs (two methods x two seeds), and each name asked for once: the preset's base (early) never
    assert fusions == Counter({"late": 1, "multifair": 1})
    assert modulators == Counter({"multifair": 1})
    methods = sorted(json.loads((d / "config.json").read_text())["method"] for d in tiny_ws.runs.iterdir())
    assert methods == ["late", "late", "multifair", "multifair"]


def test_a_preset_is_a_spec_of_its_own_name_with_its_base_and_modulator():
    spec = resolve_method(TrainConfig(fusion="multifair", modulator_params={"variant": "official-code"}))
    assert (spec.name, spec.fusion, spec.modulator, spec.kind) == ("multifair", "early", "multifair", "nn")
    assert spec.label == "multifair[official-code]"
    assert spec.modulator_params["variant"] == "official-code" and "rho" in spec.modulator_params
    composed = resolve_method(TrainConfig(fusion="early", modulator="multifair"))
    assert (composed.fusion, composed.modulator, composed.label) == ("early", "multifair", "multifair")
    applied = composed.apply(TrainConfig(fusion="early", modulator="multifair"))
    assert applied == resolve_method(TrainConfig(fusion="multifair")).apply(TrainConfig(fusion="multifair"))


def test_spec_holds_the_validated_params_kind_and_optimizer_tags():
    healnet = resolve_method(TrainConfig(fusion="healnet", fusion_params={"depth": 3}))
    assert healnet.params.depth == 3 and healnet.fusion_params["depth"] == 3 and healnet.label == "healnet[depth=3]"
    assert resolve_method(TrainConfig(fusion="gbm-ehr")).kind == "estimator"
    assert resolve_method(TrainConfig(fusion="late", optimizer="sgd")).label == "late[optimizer=sgd]"
    with pytest.raises(ConfigError, match="fusion 'late' takes no fusion_params|invalid fusion_params"):
        resolve_method(TrainConfig(fusion="late", fusion_params={"depth": 2}))
    with pytest.raises(ConfigError, match="Unknown fusion method 'nope'"):
        resolve_method(TrainConfig(fusion="nope"))


def test_the_train_grid_is_expanded_by_the_library():
    plan = TrainPlan(fusions=("late",), modalities=("ehr", "cxr,static", "ehr,cxr"), seeds=(1, 2),
                     options={"epochs": 3})
    shapes = [(c.fusion, c.static_fields, c.hourly_ehr, c.seed, c.epochs) for c in train_configs(plan)]
    assert shapes == [
        ("ehr", (), True, 1, 3), ("ehr", (), True, 2, 3),
        ("late", ("age", "admission_type", "admission_location", "first_careunit"), False, 1, 3),
        ("late", ("age", "admission_type", "admission_location", "first_careunit"), False, 2, 3),
        ("late", (), True, 1, 3), ("late", (), True, 2, 3),
    ]
    assert TrainPlan().bootstrap == 200
    with pytest.raises(ConfigError, match="ehr,notes"):
        train_configs(TrainPlan(modalities=("ehr,notes",)))


def test_a_threshold_rule_is_parsed_once_into_a_typed_rule():
    assert parse_rule("val-sens-0.8") == ThresholdRule("sens", "val-sens-0.8", 0.8)
    assert parse_rule("val-youden") == ThresholdRule("youden", "val-youden")
    assert parse_rule("0.3") == ThresholdRule("fixed", "0.3", 0.3)
    for bad in ("val-sens-0.0", "1.5", "val-magic"):
        with pytest.raises(ConfigError):
            parse_rule(bad)
        with pytest.raises(ValidationError):
            EvalFairConfig(threshold_rule=bad)
    # scores 0.1 0.4 0.6 0.9 with labels 0 0 1 1: Youden picks 0.6; a fixed rule is taken as given
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.6, 0.9], parse_rule("val-youden")) == 0.6
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.6, 0.9], "0.3") == 0.3


def test_reference_none_means_no_comparisons():
    assert EvalFairConfig(reference="none").reference is None
    assert EvalFairConfig().reference == "late"
