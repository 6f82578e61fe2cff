"""EHR imperfections as test-time scenarios: ehr_group, ehr_last_hours, ehr_noise."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mmfair.core.config import EvalMissingConfig
from mmfair.core.errors import ConfigError
from mmfair.core.evaluation import evaluate_missing
from mmfair.core.evaluation.robustness_summary import curve_points, summarise
from mmfair.core.evaluation.scenarios import EHRPerturbation, n_to_remove
from mmfair.core.registry import SCENARIOS

CONFIGS = {
    "ehr_group": dict(mechanism="ehr_group", groups=("vitals,labs",)),
    "ehr_last_hours": dict(mechanism="ehr_last_hours", hours=12),
    "ehr_noise": dict(mechanism="ehr_noise", noise_sd=0.5),
}


def _features(groups=("vitals", "vitals", "labs", "neuro"), iqr=(1.0, 2.0, 10.0, 1.0)):
    return SimpleNamespace(names=[f"v{j}" for j in range(len(groups))], groups=list(groups),
                           median=np.zeros(len(groups)), iqr=np.asarray(iqr, dtype=float))  # fmt: skip


def _raw(n=40, t=48, f=4, seed=0):
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=(n, t, f)) + 5).astype(np.float32)
    values[rng.random(values.shape) < 0.3] = np.nan
    return values


def test_registered():
    assert set(CONFIGS) <= set(SCENARIOS.names())


def test_group_transform_removes_only_the_groups_of_the_chosen_stays():
    raw = _raw()
    stays = np.zeros(len(raw), dtype=bool)
    stays[[1, 5, 7]] = True
    out = EHRPerturbation("group", stays, groups=("vitals", "neuro"))(raw, _features())
    assert np.isnan(out[stays][:, :, [0, 1, 3]]).all()
    np.testing.assert_array_equal(out[stays][:, :, 2], raw[stays][:, :, 2])  # labs untouched
    np.testing.assert_array_equal(out[~stays], raw[~stays])
    assert not np.shares_memory(out, raw)
    with pytest.raises(ConfigError, match="output"):
        EHRPerturbation("group", stays, groups=("output",))(raw, _features())


def test_last_hours_transform_leaves_earlier_hours_untouched():
    raw = _raw()
    stays = np.arange(len(raw)) % 3 == 0
    out = EHRPerturbation("last_hours", stays, hours=12)(raw, _features())
    np.testing.assert_array_equal(out[:, :36], raw[:, :36])
    assert np.isnan(out[stays, 36:]).all()
    np.testing.assert_array_equal(out[~stays], raw[~stays])


def test_noise_changes_only_observed_values_and_scales_with_iqr():
    raw = _raw(n=400, seed=1)
    stays = np.arange(len(raw)) % 2 == 0
    out = EHRPerturbation("noise", stays, sd=0.5, seed=3)(raw, _features())
    np.testing.assert_array_equal(np.isnan(out), np.isnan(raw))  # not absence: nothing added, nothing removed
    np.testing.assert_array_equal(out[~stays], raw[~stays])
    diff = (out - raw)[stays]
    observed = ~np.isnan(raw[stays])
    assert (diff[observed] != 0).mean() > 0.99
    sds = [diff[..., j][observed[..., j]].std() for j in range(4)]
    np.testing.assert_allclose(sds, [0.5, 1.0, 5.0, 0.5], rtol=0.05)
    again = EHRPerturbation("noise", stays, sd=0.5, seed=3)(raw, _features())
    np.testing.assert_array_equal(again, out)


@pytest.mark.parametrize("mechanism", sorted(CONFIGS))
def test_exact_stratified_shares_recorded_params_and_seeds(make_run, fake_predict, mechanism):
    run = make_run(n_subjects=200)
    pred = pd.read_csv(run / "predictions_test.csv")
    n = len(pred)
    label = pred["label"].to_numpy()
    cfg = EvalMissingConfig(**CONFIGS[mechanism], rates=(0.3, 0.5), draws=2, bootstrap=0, seed=4)
    fn = fake_predict()
    rows = evaluate_missing([run], cfg, fn)
    auroc = rows[(rows["metric"] == "auroc")].sort_values(["missing_rate", "draw"])
    assert set(auroc["scenario"]) == {mechanism}
    params = [json.loads(p) for p in auroc["scenario_params"]]
    assert all(p["modality"] == "ehr" and p["stratified_on"] == "label" for p in params)
    expected = {"ehr_group": {"perturbation": "group", "groups": ["labs", "vitals"]},
                "ehr_last_hours": {"perturbation": "last_hours", "hours": 12},
                "ehr_noise": {"perturbation": "noise", "sd": 0.5}}[mechanism]  # fmt: skip
    assert all(expected.items() <= p.items() for p in params)
    # rate 0 once (no transform), each rate twice; missing_rate = exact share perturbed
    assert sorted(p["requested_rate"] for p in params) == [0.0, 0.3, 0.3, 0.5, 0.5]
    for p, rate in zip(params, auroc["missing_rate"]):
        assert rate == n_to_remove(p["requested_rate"], n) / n
    transforms = [t for t in fn.transforms if t is not None]
    assert len(transforms) == 4 and fn.transforms.count(None) == 1
    for t in transforms:
        assert t.kind == expected["perturbation"]
        k = int(t.stays.sum())
        rate = [r for r in (0.3, 0.5) if n_to_remove(r, n) == k]
        assert rate, k
        for v in (0, 1):  # label-stratified
            stratum = label == v
            assert np.floor(rate[0] * stratum.sum() + 1e-9) <= t.stays[stratum].sum() <= np.ceil(rate[0] * stratum.sum() - 1e-9)
    assert auroc["draw_seed"].notna().sum() == 5
    # seeds reproducible: the same draws again; the two draws of a rate differ
    fn2 = fake_predict()
    again = evaluate_missing([run], cfg, fn2)
    pd.testing.assert_frame_equal(again, rows)
    for a, b in zip([t for t in fn2.transforms if t is not None], transforms):
        np.testing.assert_array_equal(a.stays, b.stays)
        assert a.seed == b.seed
    assert not np.array_equal(transforms[0].stays, transforms[1].stays)


def test_each_perturbation_is_its_own_curve(make_run, fake_predict):
    runs = [make_run("late-0", method="late"), make_run("early-0", method="early")]
    tables = [evaluate_missing(runs, EvalMissingConfig(**kw, rates=(0.5, 1.0), bootstrap=0), fake_predict())
              for kw in (*CONFIGS.values(), dict(mechanism="ehr_group", groups=("neuro",)))]  # fmt: skip
    table = pd.concat(tables, ignore_index=True)
    points = curve_points(table, metrics=("auroc",))
    points = points[points["attribute"] == "all"]
    families = points.groupby(["scenario", "family"])["x"].nunique()
    assert len(families) == 4 and (families == 3).all()  # rates 0, 0.5, 1 on each curve
    s = summarise(table)
    rr = s[(s["metric"] == "relative_robustness") & (s["method"] == "early")]
    assert len(rr) == 8  # 4 curves × (auroc, auprc)
    er = s[(s["metric"] == "effective_robustness") & (s["method"] == "early")]
    assert er["defined"].all()


def test_config_validation():
    assert EvalMissingConfig(mechanism="ehr_group", groups=("vitals, labs", "neuro")).groups == ("vitals", "labs", "neuro")
    for bad in (dict(mechanism="ehr_group"),  # no --groups
                dict(mechanism="ehr_group", groups=("vital",)),
                dict(mechanism="ehr_last_hours"),
                dict(mechanism="ehr_last_hours", hours=0),
                dict(mechanism="ehr_noise", noise_sd=-1.0),
                dict(mechanism="mcar", hours=12),
                dict(mechanism="ehr_noise", noise_sd=0.5, groups=("labs",)),
                dict(mechanism="ehr_noise", noise_sd=0.5, level_rates=("1=0.5",))):  # fmt: skip
        with pytest.raises(ValidationError):
            EvalMissingConfig(**bad)
