"""The demographic-encoding probe (issue 17): the probe on arrays, the fusion contract's representation hook,
and one real run probed end to end through ``mmfair eval-fair --probe``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import mmfair.core.fusion  # noqa: F401  (registers the methods)
from mmfair.core.config import EvalFairConfig, TrainConfig
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.probe import common_groups, macro_auroc, probe_scores, static_input
from mmfair.core.fusion import FusionSpec
from mmfair.core.registry import FUSIONS

GRID = (0.01, 0.1, 1.0)


def _planted(rng, n: int, shift: float, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance Gaussian embeddings; group ``M`` shifted by ``shift`` along one direction."""
    y = rng.choice(np.array(["F", "M"]), size=n)
    x = rng.normal(size=(n, dim))
    direction = np.ones(dim) / np.sqrt(dim)
    x += shift * (y == "M")[:, None] * direction
    return x, y


def _score(shift: float, seed: int = 0, n_boot: int = 200):
    rng = np.random.default_rng(seed)
    train, val, test = (_planted(rng, n, shift) for n in (3000, 1000, 3000))
    boot = PatientBootstrap(np.arange(len(test[1])), n_boot, seed)
    result = probe_scores(train, val, test, boot.weights, c_grid=GRID, min_group_size=10)
    return result, boot.ci(result["replicates"])


def test_a_planted_direction_is_recovered_at_its_bayes_auroc():
    # two Gaussians a distance 1.5 apart along one direction: the best AUROC is Phi(1.5 / sqrt 2) = 0.855
    result, ci = _score(shift=1.5)
    assert result["value"] == pytest.approx(norm.cdf(1.5 / np.sqrt(2)), abs=0.03)
    assert ci.low > 0.8 and result["n"] == 3000 and result["groups"] == ["F", "M"]


def test_pure_noise_gives_chance():
    result, ci = _score(shift=0.0)
    assert abs(result["value"] - 0.5) < 0.04
    assert ci.low < 0.5 < ci.high


def test_macro_auroc_is_sklearns_one_vs_rest_mean():
    rng = np.random.default_rng(1)
    y = rng.choice(np.array(["a", "b", "c"]), size=200)
    proba = rng.dirichlet(np.ones(3), size=200)
    proba[y == "b", 1] += 0.3
    proba /= proba.sum(1, keepdims=True)
    expected = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=["a", "b", "c"])
    assert macro_auroc(y, proba, ["a", "b", "c"]) == pytest.approx(expected, abs=1e-12)
    # replicates: weight 1 everywhere is the sample itself; weight 0 on every 'c' leaves class c undefined
    weights = np.ones((2, 200))
    weights[1, y == "c"] = 0
    reps = macro_auroc(y, proba, ["a", "b", "c"], weights)
    assert reps[0] == pytest.approx(expected) and np.isnan(reps[1])


def test_small_groups_are_left_out_and_one_group_is_undefined():
    y_train = np.array(["A"] * 30 + ["B"] * 30 + ["C"] * 5)
    y_test = np.array(["A"] * 12 + ["B"] * 9 + ["C"] * 20)
    assert common_groups(y_train, y_test, 10) == ["A"]
    assert common_groups(y_train, y_test, 5) == ["A", "B", "C"]
    rng = np.random.default_rng(0)
    parts = [(rng.normal(size=(len(y), 3)), y) for y in (y_train, y_train, y_test)]
    result = probe_scores(*parts, np.ones((3, len(y_test))), c_grid=GRID, min_group_size=10)
    assert np.isnan(result["value"]) and result["n"] == 0


def test_static_inputs_that_hold_the_attribute_are_flagged():
    plain = TrainConfig()
    with_age = TrainConfig(static_fields=("age", "admission_type"))
    with_gender = TrainConfig(static_fields=("gender",))
    assert not any(static_input(plain, a) for a in ("gender", "race_group", "age_group"))
    assert static_input(with_age, "age_group") and not static_input(with_age, "gender")
    assert static_input(with_gender, "gender") and not static_input(with_gender, "race_group")


# ---- the contract's hook ---------------------------------------------------------------------------
F, D, T, B = 4, 12, 48, 10
SPEC = FusionSpec(n_features=F, cxr_dim=D, n_outputs=1, hidden_dim=16, dropout=0.1, seq_len=T)


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    present = torch.tensor([True, False] * (B // 2))
    cxr = torch.randn(B, D, generator=g)
    cxr[~present] = 0.0
    return {"inputs": {"ehr": torch.randn(B, T, 2 * F, generator=g), "cxr": cxr},
            "present": {"ehr": torch.ones(B, dtype=torch.bool), "cxr": present},
            "labels": (torch.rand(B, 1, generator=g) > 0.5).float()}


def test_the_default_representation_is_the_heads_input():
    model = FUSIONS.get("early")(SPEC).eval()
    batch = _batch()
    with torch.no_grad():
        rep = model.representation(batch)
        logits = model(batch).logits
    head = model.head  # a Linear: its input times its weights is the output
    assert torch.allclose(rep @ head.weight.T + head.bias, logits, atol=1e-6)
    assert not model._forward_pre_hooks and not head._forward_pre_hooks  # the hooks are removed again


def test_without_one_head_the_representation_joins_every_heads_input():
    model = FUSIONS.get("late")(SPEC).eval()
    with torch.no_grad():
        rep = model.representation(_batch())
    assert rep.shape == (B, sum(model.encoders[m].out_dim for m in model.modalities))


@pytest.mark.parametrize("name", sorted(n for n in FUSIONS.names() if FUSIONS.entry(n).extra.get("kind", "nn") == "nn"))
def test_every_method_exposes_a_fused_representation(name):
    factory = FUSIONS.get(name)
    model = factory(SPEC).eval()
    with torch.no_grad():
        rep = model.representation(_batch())
    assert rep.dim() == 2 and rep.shape[0] == B and torch.isfinite(rep).all(), name


# ---- a real run, end to end -------------------------------------------------------------------------
def _tiny_workspace(root: Path):
    from tiny_workspace import build_tiny_workspace

    return build_tiny_workspace(root, n_stays=400)


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """``late`` trained on the tiny workspace whose gender is planted in CXR embedding dimension 1 (mortality
    uses dimension 0 only), then ``mmfair eval-fair --probe``."""
    import h5py

    from mmfair.cli.app import app
    from mmfair.core.training import train_run

    ws = _tiny_workspace(tmp_path_factory.mktemp("probe") / "ws")
    cohort = pd.read_csv(ws.cohort_csv, keep_default_na=False)
    with h5py.File(ws.features_h5, "r") as h5:
        emb = h5["cxr/embeddings/test-enc"][()].astype(np.float32)
        row = h5["cxr/row"][()]
    has = row >= 0
    gender = cohort["gender"].to_numpy().copy()
    gender[has] = np.where(emb[row[has], 1] > 0, "F", "M")
    cohort["gender"] = gender
    cohort.to_csv(ws.cohort_csv, index=False)
    config = TrainConfig(fusion="late", epochs=2, patience=2, hidden_dim=16, batch_size=64, device="cpu")
    train_run(config, ws)
    train_run(TrainConfig(fusion="gbm-ehr", device="cpu"), ws)
    args = ["--workspace", str(ws.root), "eval-fair", "--probe", "--attr", "gender", "--bootstrap", "50",
            "--min-group-size", "5", "--reference", "none", "--no-time-inference", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(ws.fairness_csv, keep_default_na=False)
    return rows[rows["metric"] == "probe_auroc"].reset_index(drop=True)


def test_a_tree_run_is_probed_on_its_ehr_aggregates(probed):
    trees = probed[probed["method"] == "gbm-ehr"]
    params = trees["scenario_params"].map(json.loads)
    assert set(params.map(lambda p: (p["representation"], p["source"]))) == {("ehr", "aggregates")}
    assert sorted(trees["attribute"]) == ["age_group", "gender", "race_group"]


def test_eval_fair_probe_writes_a_row_per_representation_and_attribute(probed):
    probed = probed[probed["method"] == "late"]
    params = probed["scenario_params"].map(json.loads)
    probed = probed.assign(representation=params.map(lambda p: p["representation"]),
                           source=params.map(lambda p: p["source"]), static=params.map(lambda p: p["static_input"]))
    assert sorted(zip(probed.representation, probed.attribute)) == sorted(
        (r, a) for r in ("cxr", "ehr", "fused") for a in ("age_group", "gender", "race_group"))
    assert set(probed["group"]) == {"all"} and not probed["static"].any()
    by_rep = probed.set_index(["representation", "attribute"])
    assert by_rep.loc[("cxr", "gender"), "source"] == "store"
    assert by_rep.loc[("ehr", "gender"), "source"] == "encoder"  # late fusion calls encoders.ehr as a module
    assert by_rep.loc[("fused", "gender"), "source"] == "head_input"
    assert by_rep.loc[("cxr", "gender"), "evaluated_on"] == "with_cxr"


def test_the_planted_attribute_is_found_only_where_planted(probed):
    probed = probed[probed["method"] == "late"]
    rep = probed["scenario_params"].map(lambda s: json.loads(s)["representation"])
    cxr_gender = probed[(rep == "cxr") & (probed["attribute"] == "gender")].iloc[0]
    assert cxr_gender["value"] > 0.85 and float(cxr_gender["ci_low"]) > 0.6
    ehr_gender = probed[(rep == "ehr") & (probed["attribute"] == "gender")].iloc[0]
    # the EHR never saw dimension 1: gender is planted only in stays with a CXR, random elsewhere
    assert float(ehr_gender["ci_low"]) < 0.5 + 0.1


# ---- the generator's switches the probe's planted truth rests on ---------------------------------
def test_without_age_sex_latents_the_latent_means_ignore_every_demographic():
    from mmfair.core.synthetic._model import latent_means

    age, male, race = np.array([20.0, 90.0]), np.array([False, True]), np.array(["WHITE", "BLACK"])
    assert not latent_means(age, male, race, group_base_rates=False, age_sex=False).any()
    on = latent_means(age, male, race, group_base_rates=False)
    assert on[1, 5] - on[0, 5] == pytest.approx(0.45 * 70 / 17 + 0.15)  # cardiac: older and male = larger heart


def _film(demographics: dict | None) -> np.ndarray:
    from mmfair.core.synthetic._images import draw_frontal

    p = {"effusion_right": 0.0, "effusion_left": 0.0, "edema": 0.0, "blobs": [], "atelectasis": 0, "lesion": None,
         "pneumothorax": 0, "ett": False, "central_line": False, "pacemaker": False, "ng_tube": False, "ctr": 0.46}
    if demographics is not None:
        p["demographics"] = demographics
    return draw_frontal(p, np.random.default_rng(0))


def test_the_image_signal_draws_sex_age_and_race_and_nothing_when_off():
    from mmfair.core.synthetic._images import WORK, _frontal_template

    base = {"female": False, "age": 54.0, "race_group": "WHITE"}  # bone factor 1: a middle-aged White man
    assert np.array_equal(_film(base), _film(None))
    lower_sides = np.zeros((WORK, WORK), bool)
    lower_sides[int(0.72 * WORK):int(0.88 * WORK), :int(0.25 * WORK)] = True  # the right breast's outer part
    assert (_film({**base, "female": True}) - _film(base))[lower_sides].mean() > 0.05
    ribs = _frontal_template()["rib_shadow"] > 0.05
    assert _film({**base, "age": 20.0})[ribs].mean() > _film(base)[ribs].mean() > _film({**base, "age": 88.0})[ribs].mean()
    soft = (_frontal_template()["body"] > 0.4) & (_frontal_template()["lungs"] < 0.01)
    assert _film({**base, "race_group": "BLACK"})[soft].mean() > _film(base)[soft].mean()


def test_an_unknown_probe_attribute_is_a_one_line_error(tmp_path):
    from mmfair.core.errors import ConfigError
    from mmfair.core.evaluation.probe import probe_run
    from mmfair.core.training import load_run, train_run

    ws = _tiny_workspace(tmp_path / "ws")
    run = train_run(TrainConfig(fusion="ehr", epochs=1, hidden_dim=8, device="cpu"), ws)
    with pytest.raises(ConfigError, match="no column religion"):
        probe_run(load_run(run.run_dir, device="cpu"), EvalFairConfig(probe_attributes=("religion",)))
