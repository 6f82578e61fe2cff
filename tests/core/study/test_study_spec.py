"""The study file: presets load, unknown keys are refused by name (exit 2 through the CLI), search spaces are
well formed, and the job list is the grid it says."""

from __future__ import annotations

import math

import pytest
import yaml
from typer.testing import CliRunner

import mmfair.core.fusion  # noqa: F401
from mmfair.cli.app import app
from mmfair.core.errors import ConfigError
from mmfair.core.registry import FUSIONS
from mmfair.core.study import load_study, parse_study, preset_names
from mmfair.core.study.jobs import final_jobs, tune_jobs, units
from mmfair.core.study.space import GENERIC_SPACE, defaults, method_space, study_space
from mmfair.core.config import TrainConfig


def test_presets_load_and_demo_is_small():
    assert preset_names() == ["carebench", "demo", "multifair", "paradox"]
    for name in preset_names():
        assert load_study(preset=name).name == name
    carebench = load_study(preset="carebench")
    # the count: 25 methods × 3 tasks × 5 folds × 3 seeds
    assert len(final_jobs(carebench.model_copy(update={"tuning": carebench.tuning.model_copy(update={"trials": 0})}), {})) == 1125
    demo = load_study(preset="demo")
    assert len(tune_jobs(demo)) == 3 and demo.tuning.trials == 4


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "methods": ["late"], "tuning": {"trails": 3}}))
    with pytest.raises(ConfigError, match=r"s\.yaml: unknown key 'tuning\.trails'"):
        load_study(path)
    result = CliRunner().invoke(app, ["--workspace", str(tmp_path / "ws"), "study", "run", str(path)])
    assert result.exit_code == 2
    assert "unknown key 'tuning.trails'" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "methods": ["nope"]}, "Unknown fusion method 'nope'"),
    ({"name": "x", "methods": ["late"], "train": {"fold": 1}}, "fold is set by the study grid"),
    ({"name": "x", "methods": ["late"], "train": {"epoch": 1}}, "epoch"),
    ({"name": "x", "methods": [{"name": "drfuse", "params": {"depth": 2}}]}, "drfuse: params: unknown key 'depth'"),
    ({"name": "x", "methods": ["late"], "modalities": ["ehr,xray"]}, "ehr,xray"),
])
def test_bad_study_is_one_line(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_study(data, "s.yaml")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", [n for n in FUSIONS.names()])
def test_search_space_holds_the_defaults(name):
    """Trial 0 is the default configuration, so every default must lie inside the declared space."""
    space = study_space(name, tuple(GENERIC_SPACE), {}, {})
    if getattr(FUSIONS.get(name), "tunes_generic", True):
        assert set(GENERIC_SPACE) <= set(space)
    base = TrainConfig(fusion=name)
    for key, value in defaults(base, space).items():
        dim = space[key]
        if dim[0] == "choice":
            assert value in dim[1], (name, key)
        else:
            assert dim[1] <= value <= dim[2] and not math.isnan(value), (name, key)
    assert set(method_space(name)) <= set(getattr(FUSIONS.get(name), "Params").model_fields)


def test_fixed_values_leave_the_space():
    space = study_space("drfuse", ("lr", "hidden_dim"), {"lr": 1e-4}, {"lambda_attn_aux": 0.5})
    assert "lr" not in space and "fusion.lambda_attn_aux" not in space
    assert "hidden_dim" in space and "fusion.lambda_pred_ehr" in space


def test_units_follow_the_grid():
    spec = parse_study({"name": "g", "methods": ["ehr", "late"], "folds": [0, 1], "seeds": [0, 1, 2],
                        "train_missing": [{}, {"train_missing_rate": 0.5}], "tuning": {"trials": 3}})
    got = units(spec)
    # ehr cannot lose a CXR: 2 folds × (ehr: 1 setting + late: 2 settings)
    assert len(got) == 6
    assert {u.base.fold for u in got} == {0, 1}
    assert all(u.base.seed == 0 for u in got)
    # phase 2 lists only units whose tuning finished
    first = got[0]
    finals = final_jobs(spec, {first.key: first.base})
    assert [j.config.seed for j in finals] == [0, 1, 2]
    assert len({j.key for j in finals}) == 3


def test_modality_subsets_pick_the_unimodal_models():
    spec = parse_study({"name": "p", "methods": ["late", "early"], "modalities": ["ehr", "cxr", "ehr,cxr"]})
    methods = sorted(u.method for u in units(spec))
    assert methods == ["cxr", "early", "ehr", "late"]  # ehr and cxr once each, not once per fusion


def test_examples_are_copies_of_the_presets():
    from pathlib import Path

    examples = Path(__file__).resolve().parents[3] / "examples"
    for name in preset_names():
        assert load_study(examples / f"study_{name}.yaml") == load_study(preset=name), name


def test_help_lists_each_preset_and_status_before_any_run(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["study", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in preset_names():
        assert f"{name}:" in result.output
    result = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "study", "status", "--preset", "demo"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # 3 tuning units + 3 × 2 final runs, nothing done yet
    assert "0/9 jobs" in result.output
    result = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "study", "run", "--preset", "nope"])
    assert result.exit_code == 2 and "unknown study preset 'nope'" in result.output


# ---- tuned final runs keep one label across folds -------------------------------------------------------
def test_tuned_final_runs_keep_one_label_across_folds_and_untuned_runs_keep_theirs():
    from mmfair.core.training.methods import method_name
    from mmfair.core.study.jobs import study_label
    from mmfair.core.study.space import apply

    grid = {"name": "l", "methods": ["late", {"name": "healnet", "params": {"depth": 3}}], "folds": [0, 1],
            "seeds": [0, 1]}
    tuned = parse_study({**grid, "tuning": {"trials": 2}})
    # each fold chose other values (healnet: 1 Fourier band on fold 0, 4 on fold 1)
    chosen = {u.key: apply(u.base, {"fusion.fourier_bands": 1 + 3 * u.base.fold} if u.method == "healnet" else
                           {"lr": 0.01 * (u.base.fold + 1)}) for u in units(tuned)}
    labels: dict[str, set[str]] = {}
    for job in final_jobs(tuned, chosen):
        labels.setdefault(job.method, set()).add(method_name(job.config))
    assert labels == {"late": {"late[tuned]"}, "healnet": {"healnet[depth=3,tuned]"}}
    assert study_label(tuned, "late") == "late[tuned]" and study_label(tuned, "ehr") == "ehr"
    untuned = parse_study({**grid, "tuning": {"trials": 0}})
    plain = final_jobs(untuned, {})
    assert {method_name(j.config) for j in plain} == {"late", "healnet[depth=3]"}
    assert all(j.config.label is None and j.config.identity()["label"] is None for j in plain)
    assert study_label(untuned, "late") == "late"
    # the same configuration tuned or not: the label alone keeps the two run ids apart
    base = units(tuned)[0].base
    assert "label" in base.model_copy(update={"label": "late[tuned]"}).identity()


# ---- modulator presets tune their modulator's own parameters --------------------------------------------
PRESET_MODULATOR_DEFAULTS = {  # the modulators' documented defaults (their Params), written out by hand
    "multifair": {"rho": 1.0, "lambda_gm": 0.15, "tau": 0.04, "gamma": 0.5, "beta": 0.3},
    "ogm-ge": {"alpha": 0.1},
    "cggm": {"rho": 1.3, "lambda_gm": 0.2},
    "inforeg": {"k_threshold": 0.04, "history": 10, "slowdown_gamma": 0.5, "proximal_strength": 0.95},
    "pmr": {"alpha": 1.0},
    "fairgrad": {"fairness_rate": 0.01},
    "group-dro": {"eta": 0.01, "adjustment": 0.0},
    "aug": {"lam": 1.0, "delta": 0.01, "check_every": 5},
}


@pytest.mark.parametrize("preset", sorted(PRESET_MODULATOR_DEFAULTS))
def test_a_preset_tunes_its_modulator_and_trial_0_is_its_defaults(preset):
    import optuna

    from mmfair.core.modulators import resolve_modulator
    from mmfair.core.study.space import apply, suggest

    expected = PRESET_MODULATOR_DEFAULTS[preset]
    (unit,) = units(parse_study({"name": "m", "methods": [preset], "tuning": {"trials": 3}}))
    assert {"lr", "hidden_dim", "dropout"} <= set(unit.space)
    assert {k.removeprefix("modulator.") for k in unit.space if k.startswith("modulator.")} == set(expected)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(defaults(unit.base, unit.space))
    trial0 = apply(unit.base, suggest(study.ask(), unit.space))
    assert {k: trial0.modulator_params[k] for k in expected} == expected
    resolved = [resolve_modulator(c) for c in (trial0, unit.base)]
    params_cls = getattr(FUSIONS.get(resolved[0].fusion), "Params", None)
    resolved = [c.model_copy(update={"fusion_params": params_cls(**c.fusion_params).model_dump() if params_cls else {}})
                for c in resolved]
    assert resolved[0] == resolved[1]  # the preset at its defaults (its base's params too), nothing else


def test_fixed_modulator_params_leave_the_space_and_a_wrong_space_is_named():
    from mmfair.core.registry import MODULATORS
    from mmfair.core.study.space import modulator_space

    (unit,) = units(parse_study({"name": "m", "methods": [{"name": "multifair", "modulator_params": {"rho": 0.6}}],
                                 "tuning": {"trials": 3}}))
    assert "modulator.rho" not in unit.space and "modulator.tau" in unit.space
    assert defaults(unit.base, unit.space)["modulator.tau"] == 0.04
    cls = MODULATORS.get("group-dro")
    original = cls.search_space
    cls.search_space = {"etta": ("log", 0.001, 0.1)}
    try:
        with pytest.raises(ConfigError, match="modulator 'group-dro': search_space names etta"):
            modulator_space("group-dro")
    finally:
        cls.search_space = original
