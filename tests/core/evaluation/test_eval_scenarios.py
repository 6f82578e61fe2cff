"""The label-stratified MCAR removal."""

import numpy as np
import pytest

from mmfair.core.evaluation.scenarios import draw_seed, n_to_remove, stratified_removal
from mmfair.core.registry import SCENARIOS


@pytest.fixture
def stays():
    rng = np.random.default_rng(0)
    present = rng.random(503) < 0.6
    label = (rng.random(503) < 0.3).astype(int)
    return present, label


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.2, 0.5, 0.77, 1.0])
def test_exact_share_only_among_present_and_stratified(stays, rate):
    present, label = stays
    keep = stratified_removal(present, label, rate, seed=11)
    removed = present & ~keep
    assert removed.sum() == n_to_remove(rate, present.sum())
    assert keep[~present].all()  # stays without the modality are never "removed"
    for value in (0, 1):
        stratum = present & (label == value)
        got = removed[stratum].sum()
        assert np.floor(rate * stratum.sum()) <= got <= np.ceil(rate * stratum.sum())


def test_reproducible_and_seed_dependent(stays):
    present, label = stays
    a = stratified_removal(present, label, 0.3, draw_seed(0, 0.3, 0))
    b = stratified_removal(present, label, 0.3, draw_seed(0, 0.3, 0))
    c = stratified_removal(present, label, 0.3, draw_seed(0, 0.3, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert draw_seed(0, 0.3, 0) != draw_seed(1, 0.3, 0) != draw_seed(0, 0.5, 0)


def test_round_half_up():
    assert n_to_remove(0.5, 5) == 3
    assert n_to_remove(0.2, 12) == 2


def test_bad_rate():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stratified_removal([True], [0], 1.5, 0)


def test_registered():
    assert "mcar" in SCENARIOS


# --- the pieces of the scenarios, on a few stays worked by hand --------------------------------------------

import hashlib  # noqa: E402
import json  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pandas as pd  # noqa: E402

from mmfair.core.errors import ConfigError  # noqa: E402
from mmfair.core.evaluation.scenarios import (  # noqa: E402
    EHRPerturbation,
    ScenarioPoint,
    StayContext,
    level_removal,
    level_text,
)


def test_draw_seed_is_the_documented_seed_sequence():
    # SeedSequence([seed, key, draw]) with key = the rate in millionths, or the first 8 hex digits of a text's sha256
    def expected(seed, key, draw):
        return int(np.random.SeedSequence([seed, key, draw]).generate_state(1, dtype=np.uint32)[0])

    assert draw_seed(4, 0.3, 2) == expected(4, 300_000, 2)
    assert draw_seed(4, 0.3000000001, 2) == draw_seed(4, 0.3, 2)  # the same requested rate
    text = '{"mechanism": "group"}'
    assert draw_seed(1, text, 0) == expected(1, int(hashlib.sha256(text.encode()).hexdigest()[:8], 16), 0)
    assert isinstance(draw_seed(1, text, 0), int)


@pytest.mark.parametrize("rate, n, expected", [
    (0.5, 5, 3), (0.25, 2, 1), (0.3, 5, 2), (0.29, 5, 1), (0.0, 9, 0), (1.0, 9, 9),
    (0.15, 10, 2),  # 0.15 · 10 is 1.4999999999999998 in floating point: still a half, rounded up
])
def test_n_to_remove_rounds_half_up(rate, n, expected):
    assert n_to_remove(rate, n) == expected


def test_stratified_removal_checks_its_inputs():
    with pytest.raises(ValueError, match=r"^a missing rate must lie in \[0, 1\], got -0.1$"):
        stratified_removal([True], [0], -0.1, 0)
    with pytest.raises(ValueError, match="^present has 3 rows but strata has 2$"):
        stratified_removal([True, True, False], [0, 1], 0.5, 0)
    assert stratified_removal([True, True], [0, 1], 0.2, 0).tolist() == [True, True]  # round(0.4) = 0: nothing


def test_stratified_removal_quotas_by_hand():
    # present: 4 of label 0, 2 of label 1 (the last stay has no modality): rate 0.5 -> 3 in all,
    # quotas 2.0 and 1.0: exactly 2 and 1, whatever the draw
    present = np.array([True] * 6 + [False])
    strata = np.array([0, 0, 0, 0, 1, 1, 1])
    for seed in range(5):
        keep = stratified_removal(present, strata, 0.5, seed)
        assert keep.dtype == bool and keep[6]
        assert (~keep[:4]).sum() == 2 and (~keep[4:6]).sum() == 1
    # 1 stay of label 0 and 3 of label 1 at rate 0.9: total round(3.6) = 4, quotas 0.9 / 2.7 -> base 0 + 2,
    # 2 owed: label 0 (0.9) then label 1 (0.7): everybody
    assert not stratified_removal([True] * 4, [0, 1, 1, 1], 0.9, 3).any()


def test_level_text():
    values = [None, float("nan"), "", pd.NA, 1, 2.0, np.int64(3), np.float32(4.0), "WHITE", 2.5]
    assert level_text(values).tolist() == ["unknown"] * 4 + ["1", "2", "3", "4", "WHITE", "2.5"]
    assert level_text(np.array([[0], [1]])).tolist() == ["0", "1"]
    assert level_text([1]).dtype == object


def test_level_removal_by_hand():
    present = np.array([True, True, True, True, False, True])
    levels = np.array(["A", "A", "B", "B", "B", "C"], dtype=object)
    strata = np.zeros(6, dtype=int)
    keep = level_removal(present, levels, strata, {"A": 1.0, "C": 0.0}, seed=0)
    assert keep.tolist() == [False, False, True, True, True, True]
    keep = level_removal(present, levels, strata, {"*": 1.0, "A": 0.0}, seed=0)  # '*': every level not named
    assert keep.tolist() == [True, True, False, False, True, False]
    keep = level_removal(present, levels, strata, {"B": 0.5}, seed=0)
    assert keep[[0, 1, 4, 5]].all() and (~keep[[2, 3]]).sum() == 1
    with pytest.raises(ConfigError) as err:
        level_removal(present, levels, strata, {"D": 0.5}, seed=0, source="pred.csv", what="label value")
    assert str(err.value) == "pred.csv: --rates names label value 'D', which no test stay has; available: A, B, C"


def _ctx(pred=None):
    present = np.array([True, True, True, True, False, True])
    strata = np.array([0, 1, 0, 1, 0, 1])
    pred = pred if pred is not None else pd.DataFrame({"race": ["A", "A", "B", "B", "B", "C"]})
    return StayContext(pred, present, strata, "mortality", source="pred.csv")


def test_mcar_points_and_apply():
    mcar = SCENARIOS.get("mcar")
    config = SimpleNamespace(rate_grid=lambda: (0.5, 0.2, 0.5), draws=3)
    points = mcar.points(config)
    assert [(p.params, p.seed_key, p.draws, p.is_clean) for p in points] == [
        ({"requested_rate": 0.0}, 0.0, 1, True),
        ({"requested_rate": 0.2}, 0.2, 3, False),
        ({"requested_rate": 0.5}, 0.5, 3, False),
    ]
    ctx = _ctx()
    removal = mcar.apply(points[2], ctx, 7)
    assert np.array_equal(removal.keep, stratified_removal(ctx.present, ctx.strata, 0.5, 7))
    assert removal.evaluated.tolist() == ctx.present.tolist() and removal.evaluated is not ctx.present
    assert removal.params == {"stratified_on": "mortality"} and removal.ehr_transform is None
    assert np.array_equal(mcar.apply(points[2], ctx, None).keep, stratified_removal(ctx.present, ctx.strata, 0.5, 0))


def test_group_points_put_the_clean_profile_first_and_drop_repeats_and_zeros():
    group = SCENARIOS.get("group")
    config = SimpleNamespace(by="race", draws=4,
                             level_rates=({"B": 0.4, "A": 0.1}, {"A": 0.1, "B": 0.4}, {"A": 0.0}, {"C": 1.0}))
    points = group.points(config)
    key = json.dumps({"mechanism": "group", "by": "race", "rates": {"A": 0.1, "B": 0.4}}, sort_keys=True)
    assert [(p.params, p.seed_key, p.draws, p.is_clean) for p in points] == [
        ({"by": "race", "rates": {}}, 0.0, 1, True),
        ({"by": "race", "rates": {"A": 0.1, "B": 0.4}}, key, 4, False),
        ({"by": "race", "rates": {"C": 1.0}}, json.dumps({"mechanism": "group", "by": "race", "rates": {"C": 1.0}},
                                                          sort_keys=True), 4, False),
    ]
    assert list(points[1].params["rates"]) == ["A", "B"]


def test_group_apply_by_hand():
    group = SCENARIOS.get("group")
    ctx = _ctx()
    clean = group.apply(ScenarioPoint({"by": "race", "rates": {}}, 0.0, 1, True), ctx, 3)
    assert clean.keep.tolist() == [True] * 6 and clean.evaluated.tolist() == ctx.present.tolist()
    assert clean.params == {"stratified_on": "mortality"}
    removal = group.apply(ScenarioPoint({"by": "race", "rates": {"A": 1.0, "C": 1.0}}, "k", 1), ctx, 3)
    assert removal.keep.tolist() == [False, False, True, True, True, False]
    assert removal.evaluated.tolist() == ctx.present.tolist()
    assert removal.params == {"by": "race", "stratified_on": "mortality"}
    with pytest.raises(ConfigError) as err:
        group.apply(ScenarioPoint({"by": "insurance", "rates": {"A": 1.0}}, "k", 1), ctx, 3)
    assert str(err.value) == "pred.csv: --by column 'insurance' is missing from the predictions"
    with pytest.raises(ConfigError, match="^pred.csv: --rates names group 'Z', which no test stay has"):
        group.apply(ScenarioPoint({"by": "race", "rates": {"Z": 1.0}}, "k", 1), ctx, 3)


def test_label_scenario_uses_the_stratification_label():
    label = SCENARIOS.get("label")
    points = label.points(SimpleNamespace(by="race", draws=2, level_rates=({"1": 1.0},)))
    assert [p.params for p in points] == [{"by": None, "rates": {}}, {"by": None, "rates": {"1": 1.0}}]
    ctx = _ctx()
    removal = label.apply(points[1], ctx, 0)
    assert removal.keep.tolist() == [True, False, True, False, True, False]  # every present stay of label 1
    assert removal.params == {"by": "mortality", "stratified_on": "mortality"}
    with pytest.raises(ConfigError, match="^pred.csv: --rates names label value '2', which no test stay has"):
        label.apply(ScenarioPoint({"by": None, "rates": {"2": 1.0}}, "k", 1), ctx, 0)


def test_natural_scenario_is_the_whole_fold():
    natural = SCENARIOS.get("natural")
    points = natural.points(SimpleNamespace())
    assert [(p.params, p.seed_key, p.draws, p.is_clean) for p in points] == [({"observed": True}, None, 1, False)]
    removal = natural.apply(points[0], _ctx(), None)
    assert removal.keep.tolist() == [True] * 6 and removal.evaluated.tolist() == [True] * 6
    assert removal.params == {} and removal.evaluated is not removal.keep


def test_profile_and_ehr_checks_name_what_is_missing():
    cases = [
        ("group", SimpleNamespace(level_rates=(), by="race"),
         "the group mechanism needs at least one --rates profile, e.g. WHITE=0.1,BLACK=0.4"),
        ("group", SimpleNamespace(level_rates=({"A": 0.1},), by=None), "the group mechanism needs --by ATTRIBUTE (e.g. race_group)"),
        ("label", SimpleNamespace(level_rates=(), by=None),
         "the label mechanism needs at least one --rates profile, e.g. 1=0.6,0=0.2"),
        ("ehr_group", SimpleNamespace(groups=()), "the ehr_group mechanism needs --groups"),
        ("ehr_group", SimpleNamespace(groups=("labs", "vital")),
         "--groups: unknown variable group(s) ['vital']; choose from vitals, labs, neuro, output"),
        ("ehr_last_hours", SimpleNamespace(hours=0), "the ehr_last_hours mechanism needs --hours"),
        ("ehr_noise", SimpleNamespace(noise_sd=0.0), "the ehr_noise mechanism needs --noise-sd"),
    ]
    for name, config, message in cases:
        with pytest.raises(ValueError) as err:
            SCENARIOS.get(name).check(config)
        assert str(err.value) == message, name
    SCENARIOS.get("group").check(SimpleNamespace(level_rates=({"A": 0.1},), by="race"))
    SCENARIOS.get("ehr_group").check(SimpleNamespace(groups=("labs", "vitals")))
    SCENARIOS.get("mcar").check(SimpleNamespace())


class _Features(SimpleNamespace):
    pass


def _values():
    # 2 stays × 3 hours × 2 features; stay 0 has one unobserved value
    v = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    v[0, 0, 1] = np.nan
    return v


def test_ehr_group_perturbation_blanks_the_groups_of_the_chosen_stays_only():
    features = _Features(groups=["vitals", "labs"], iqr=np.array([1.0, 2.0]))
    values = _values()
    out = EHRPerturbation("group", np.array([True, False]), groups=("labs",))(values, features)
    assert out.dtype == np.float32
    assert np.isnan(out[0, :, 1]).all() and np.array_equal(out[0, :, 0], values[0, :, 0])
    assert np.array_equal(out[1], values[1])
    assert np.isnan(values[0, 0, 1]) and values[0, 1, 1] == 3.0  # the input is not changed
    with pytest.raises(ConfigError, match=r"^--groups neuro: no such variable group in the store \(have labs, vitals\)$"):
        EHRPerturbation("group", np.array([True, False]), groups=("neuro",))(values, features)
    with pytest.raises(ConfigError, match="^the features store records no /ehr/feature_groups"):
        EHRPerturbation("group", np.array([True, False]), groups=("labs",))(values, _Features(groups=None))


def test_ehr_last_hours_perturbation_blanks_the_last_hours():
    out = EHRPerturbation("last_hours", np.array([False, True]), hours=2)(_values(), _Features())
    assert np.isnan(out[1, 1:]).all() and np.array_equal(out[1, 0], [6.0, 7.0])
    assert np.array_equal(out[0], _values()[0], equal_nan=True)
    with pytest.raises(ValueError, match="^ehr_transform: 3 stays, the draw has 2$"):
        EHRPerturbation("last_hours", np.array([False, True]), hours=2)(np.zeros((3, 3, 2)), _Features())


def test_ehr_noise_perturbation_adds_sd_times_iqr_noise_to_observed_values_only():
    features = _Features(iqr=np.array([1.0, 2.0]))
    values = _values()
    out = EHRPerturbation("noise", np.array([True, False]), sd=0.5, seed=9)(values, features)
    # the documented draw: standard normals over the full array from the seed, scaled by sd · IQR per feature
    z = np.random.default_rng(9).standard_normal(values.shape)
    expected = values[0] + z[0] * np.array([0.5, 1.0])
    assert np.isnan(out[0, 0, 1])  # unobserved stays unobserved
    observed = ~np.isnan(values[0])
    assert out[0][observed] == pytest.approx(expected[observed].astype(np.float32), abs=1e-6)
    assert np.array_equal(out[1], values[1])


def test_ehr_perturbation_key_names_the_setting_and_the_stays():
    a = EHRPerturbation("group", np.array([True, False]), groups=("labs",), seed=3)
    digest = hashlib.sha1(np.packbits(np.array([True, False])).tobytes() + b"2").hexdigest()
    assert json.loads(a.key()) == ["group", ["labs"], 0, 0.0, 3, digest]
    assert a.key() != EHRPerturbation("group", np.array([False, True]), groups=("labs",), seed=3).key()


def test_ehr_scenario_points_and_apply():
    config = SimpleNamespace(rate_grid=lambda: (0.5,), draws=2, groups=("vitals", "labs"), hours=12, noise_sd=0.5)
    ehr_group = SCENARIOS.get("ehr_group")
    points = ehr_group.points(config)
    keys = [json.dumps({"mechanism": "ehr_group", "groups": ["labs", "vitals"], "rate": r}, sort_keys=True)
            for r in (0.0, 0.5)]
    assert [(p.params, p.seed_key, p.draws, p.is_clean) for p in points] == [
        ({"perturbation": "group", "groups": ["labs", "vitals"], "requested_rate": 0.0}, keys[0], 1, True),
        ({"perturbation": "group", "groups": ["labs", "vitals"], "requested_rate": 0.5}, keys[1], 2, False),
    ]
    assert SCENARIOS.get("ehr_last_hours").points(config)[1].params == {
        "perturbation": "last_hours", "hours": 12, "requested_rate": 0.5}
    assert SCENARIOS.get("ehr_noise").points(config)[0].params == {
        "perturbation": "noise", "sd": 0.5, "requested_rate": 0.0}
    present = np.ones(4, dtype=bool)
    ctx = StayContext(pd.DataFrame(index=range(4)), present, np.array([0, 0, 1, 1]), "mortality")
    clean = ehr_group.apply(points[0], ctx, 5)
    assert clean.keep.all() and clean.ehr_transform is None and clean.params == {"stratified_on": "mortality"}
    removal = ehr_group.apply(points[1], ctx, 5)
    assert np.array_equal(removal.keep, stratified_removal(present, ctx.strata, 0.5, 5))
    assert removal.evaluated.all() and removal.params == {"stratified_on": "mortality"}
    t = removal.ehr_transform
    noise_seed = int(np.random.SeedSequence([5, 1]).generate_state(1, dtype=np.uint32)[0])
    assert (t.kind, t.groups, t.hours, t.sd, t.seed) == ("group", ("labs", "vitals"), 0, 0.0, noise_seed)
    assert np.array_equal(t.stays, ~removal.keep)
    hours = SCENARIOS.get("ehr_last_hours")
    t = hours.apply(hours.points(config)[1], ctx, 5).ehr_transform
    assert (t.kind, t.groups, t.hours, t.sd) == ("last_hours", (), 12, 0.0)
    noise = SCENARIOS.get("ehr_noise")
    t = noise.apply(noise.points(config)[1], ctx, None).ehr_transform
    assert (t.kind, t.hours, t.sd) == ("noise", 0, 0.5)
    assert t.seed == int(np.random.SeedSequence([0, 1]).generate_state(1, dtype=np.uint32)[0])


def test_ehr_scenario_removal_follows_the_draw_seed_and_no_seed_is_seed_0():
    config = SimpleNamespace(rate_grid=lambda: (0.5,), draws=2, groups=(), hours=6, noise_sd=0.0)
    scenario = SCENARIOS.get("ehr_last_hours")
    point = scenario.points(config)[1]
    present = np.ones(40, dtype=bool)
    strata = np.arange(40) % 2
    ctx = StayContext(pd.DataFrame(index=range(40)), present, strata, "mortality")
    for seed in (5, 6):
        assert np.array_equal(scenario.apply(point, ctx, seed).keep, stratified_removal(present, strata, 0.5, seed))
    assert np.array_equal(scenario.apply(point, ctx, None).keep, stratified_removal(present, strata, 0.5, 0))
    clean = scenario.apply(scenario.points(config)[0], ctx, 5)
    assert clean.evaluated.tolist() == [True] * 40 and clean.evaluated is not ctx.present


def test_ehr_perturbation_returns_float32_and_names_a_bad_input():
    values = np.zeros((2, 4, 2), dtype=np.float64)
    out = EHRPerturbation("last_hours", np.array([True, False]), hours=1)(values, _Features())
    assert out.dtype == np.float32 and np.isnan(out[0, 3]).all() and not np.isnan(out[0, :3]).any()
    with pytest.raises(ValueError, match="^ehr_transform: 3 stays, the draw has 2$"):
        EHRPerturbation("last_hours", np.array([True, False]), hours=1)(np.zeros((3, 4, 2)), _Features())
    with pytest.raises(ConfigError, match="^the features store records no /ehr/feature_groups"):
        EHRPerturbation("group", np.array([True, False]), groups=("labs",))(values, _Features())  # no attribute
    features = _Features(groups=["vitals", "labs"])
    with pytest.raises(ConfigError, match=r"^--groups neuro, output: no such variable group"):
        EHRPerturbation("group", np.array([True, False]), groups=("output", "neuro"))(values, features)


def test_label_scenario_passes_the_draw_seed_on():
    label = SCENARIOS.get("label")
    present = np.ones(40, dtype=bool)
    strata = np.arange(40) % 2
    ctx = StayContext(pd.DataFrame(index=range(40)), present, strata, "mortality")
    point = ScenarioPoint({"by": None, "rates": {"1": 0.5}}, "k", 1)
    for seed in (3, 4):
        expected = level_removal(present, level_text(strata), strata, {"1": 0.5}, seed)
        assert np.array_equal(label.apply(point, ctx, seed).keep, expected)
