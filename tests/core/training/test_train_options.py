"""Training options of the missing-modality issue: cohorts, the temporal split, train-time CXR removal
(fixed share and per-batch dropout), the learned missing token, method hyperparameters and ``prepare``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import Field

from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.fusion import FusionParams
from mmfair.core.fusion._early import EarlyFusion
from mmfair.core.registry import FUSIONS
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training.data import Split, load_store, remove_cxr, run_rows
from mmfair.core.training.runs import compute_run_id, resolve_config
from mmfair.core.training.trainer import drop_modality


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "patience": 2, "hidden_dim": 16, "batch_size": 32, "device": "cpu", **kw})


# ---- rows --------------------------------------------------------------------------------------------
# the temporal split's rows: test_training_data.py


def test_matched_cohort_restricts_training_and_validation_not_test(tiny_ws):
    store = load_store(tiny_ws)
    full, matched = run_rows(store, 0), run_rows(store, 0, train_cohort="matched")
    has_cxr = store.cxr_row >= 0
    for name in ("train", "val"):
        assert has_cxr[matched[name]].all()
        np.testing.assert_array_equal(matched[name], full[name][has_cxr[full[name]]])
    np.testing.assert_array_equal(matched["test"], full["test"])


# ---- train-time removal ------------------------------------------------------------------------------
def _split(n: int = 200, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    present = torch.from_numpy(rng.random(n) < 0.6)
    labels = torch.from_numpy((rng.random(n) < 0.3).astype(np.float32))[:, None]
    return Split("train", np.arange(n), {"ehr": torch.zeros(n, 2, 2)}, {"ehr": torch.ones(n, dtype=torch.bool),
                 "cxr": present}, labels)


def test_remove_cxr_takes_exactly_the_share_per_label_and_only_from_present():
    split = _split()
    before = split.present["cxr"].clone()
    removed = remove_cxr(split, 0.5, seed=3)
    after = split.present["cxr"]
    assert before[removed].all() and not after[removed].any()
    assert torch.equal(after | torch.from_numpy(np.isin(np.arange(200), removed)), before)
    y = split.labels[:, 0].bool()
    # the one removal rule (eval-missing's MCAR): exactly round(rate × n) in all, halves up, split over the
    # label strata by largest remainders (each stratum gets the floor or the ceiling of its share)
    assert removed.size == int(np.floor(0.5 * int(before.sum()) + 0.5))
    for value in (True, False):
        n = int((before & (y == value)).sum())
        assert int((before & ~after & (y == value)).sum()) in {n // 2, (n + 1) // 2}
    again = _split()
    np.testing.assert_array_equal(remove_cxr(again, 0.5, seed=3), removed)  # seeded


def test_drop_modality_never_touches_the_ehr_or_restores_an_absent_cxr():
    present = {"ehr": torch.ones(5000, dtype=torch.bool), "cxr": torch.rand(5000) < 0.5}
    out = drop_modality(present, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(out["ehr"], present["ehr"])
    assert not (out["cxr"] & ~present["cxr"]).any()
    dropped = (present["cxr"] & ~out["cxr"]).sum() / present["cxr"].sum()
    assert 0.27 < float(dropped) < 0.33
    assert torch.equal(drop_modality(present, 0.0, torch.Generator())["cxr"], present["cxr"])


# ---- config resolution ---------------------------------------------------------------------------------
def test_identity_holds_every_field_but_the_machine_ones():
    base = config(fusion="late")
    identity = base.identity()
    assert set(identity) == set(TrainConfig.model_fields) - set(TrainConfig.MACHINE_FIELDS)
    changed = base.model_copy(update={"modality_dropout": 0.3})
    assert compute_run_id(changed, "fp") != compute_run_id(base, "fp")


def test_resolution_refuses_what_cannot_work(tiny_ws):
    store = load_store(tiny_ws)
    with pytest.raises(ConfigError, match="learned missing token.*early"):
        resolve_config(config(fusion="late", missing_token="learned"), store)
    with pytest.raises(ConfigError, match="cannot train with CXRs removed"):
        resolve_config(config(fusion="ehr", modality_dropout=0.2), store)
    with pytest.raises(ConfigError, match="cannot train with CXRs removed"):
        resolve_config(config(fusion="cxr", train_missing_rate=0.2), store)
    with pytest.raises(ConfigError, match="contradicts"):
        resolve_config(config(fusion="late", train_cohort="matched", modality_dropout=0.2), store)
    with pytest.raises(ConfigError, match="takes no fusion_params|invalid fusion_params"):
        resolve_config(config(fusion="late", fusion_params={"depth": 2}), store)
    assert resolve_config(config(fusion="cxr"), store).train_cohort == "matched"  # what it trains on anyway


# ---- end to end on the tiny workspace ------------------------------------------------------------------
def test_train_missing_rate_and_dropout_runs_record_what_they_did(tiny_ws):
    plain = train_run(config(fusion="early"), tiny_ws)
    fixed = train_run(config(fusion="early", train_missing_rate=0.5), tiny_ws)
    dropped = train_run(config(fusion="early", modality_dropout=0.4, missing_token="learned"), tiny_ws)
    assert len({plain.run_id, fixed.run_id, dropped.run_id}) == 3
    info = {r.run_id: json.loads((r.run_dir / "config.json").read_text()) for r in (plain, fixed, dropped)}
    plain, fixed, dropped = plain.run_id, fixed.run_id, dropped.run_id
    natural = info[plain]["train_cxr_missing_share"]
    assert info[fixed]["train_missing_rate"] == 0.5 and info[plain]["train_missing_rate"] is None
    # half of the training CXRs removed: the missing share grows from m to m + (1 − m)/2 (up to rounding)
    assert info[fixed]["train_cxr_missing_share"] == pytest.approx(natural + (1 - natural) / 2, abs=0.02)
    # train-time removal touches the training split only: validation stays keep their CXR (CareBench removes
    # it from validation too; mmfair selects checkpoints on validation as recorded — docs/DESIGN.md)
    val = {r: pd.read_csv(tiny_ws.runs / r / "predictions_val.csv") for r in (plain, fixed)}
    np.testing.assert_array_equal(val[fixed]["present_cxr"], val[plain]["present_cxr"])
    assert val[fixed]["present_cxr"].sum() > 0
    assert info[dropped]["modality_dropout"] == 0.4 and info[dropped]["missing_token"] == "learned"
    run_dir = tiny_ws.runs / dropped
    run = load_run(run_dir)
    assert run.model.missing_tokens["cxr"].abs().sum() > 0  # the token trained
    saved = pd.read_csv(run_dir / "predictions_test.csv", keep_default_na=False, na_values=[""])
    np.testing.assert_allclose(predict(run, "test")["score"], saved["score"], rtol=1e-6)


def test_matched_and_temporal_runs_use_their_rows(tiny_ws):
    matched = train_run(config(fusion="late", train_cohort="matched"), tiny_ws)
    val = pd.read_csv(matched.run_dir / "predictions_val.csv")
    assert (val["present_cxr"] == 1).all()
    test = pd.read_csv(matched.run_dir / "predictions_test.csv")
    assert (test["present_cxr"] == 0).any()  # the test fold is whole; the evaluated cohort is chosen later
    temporal = train_run(config(fusion="ehr", split="temporal"), tiny_ws)
    cohort = pd.read_csv(tiny_ws.cohort_csv)
    test = pd.read_csv(temporal.run_dir / "predictions_test.csv")
    years = cohort.set_index("stay_id").loc[test["stay_id"], "anchor_year_group"]
    assert set(years) == {"2014 - 2016"} and len(test) == int((cohort["anchor_year_group"] == "2014 - 2016").sum())


class _BankParams(FusionParams):
    bank_size: int = Field(8, gt=0)


class _PreparedEarly(EarlyFusion):
    """Early fusion plus a buffer filled by ``prepare`` from the training split (the protocol under test)."""

    Params = _BankParams

    def __init__(self, spec, params=None):
        super().__init__(spec, params)
        self.register_buffer("bank_mean", torch.zeros(spec.cxr_dim))
        self.seen_rows = 0

    def prepare(self, train):
        present = train.present["cxr"]
        self.bank_mean.copy_(train.inputs["cxr"][present][: self.params.bank_size].mean(0))
        self.seen_rows = len(train)


def test_prepare_gets_the_training_split_and_its_buffers_reach_model_pt(tiny_ws, monkeypatch):
    monkeypatch.setitem(FUSIONS._entries, "prepared-early", type(FUSIONS.entry("early"))(
        name="prepared-early", obj=_PreparedEarly, summary="test", paper="test et al."))
    result = train_run(config(fusion="prepared-early", fusion_params={"bank_size": 4}), tiny_ws)
    info = json.loads((result.run_dir / "config.json").read_text())
    assert info["fusion_params"] == {"bank_size": 4}
    state = torch.load(result.run_dir / "model.pt", weights_only=True)
    assert state["bank_mean"].abs().sum() > 0
    assert load_run(result.run_dir).model.params.bank_size == 4


def test_model_variants_get_their_own_method_name():
    from mmfair.core.training.methods import method_name

    assert method_name(config(fusion="late")) == "late"
    assert method_name(config(fusion="early", cxr_input="images", missing_token="learned")) == "early[images,learned-token]"
    assert method_name(config(fusion="healnet", fusion_params={"depth": 3, "heads": 2})) == "healnet[depth=3]"
    assert method_name(config(fusion="healnet", fusion_params={"depth": 2})) == "healnet"  # the default value


def test_balanced_class_weights_come_from_the_training_labels_and_weight_the_loss():
    from mmfair.core.registry import TASKS

    binary = TASKS.get("mortality").balanced(torch.tensor([[1.0], [0.0], [0.0], [0.0]]))
    assert binary.class_weights == (3.0,)
    logits, labels = torch.tensor([[0.3], [-1.0]]), torch.tensor([[1.0], [0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=torch.tensor([3.0]))
    torch.testing.assert_close(binary.loss(logits, labels), expected)
    multilabel = TASKS.get("phenotype").balanced(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    assert multilabel.class_weights == (1 / 3, 3.0)
    los = TASKS.get("los")
    weighted = los.balanced(torch.tensor([0, 0, 0, 1]))
    assert weighted.class_weights[:2] == (4 / (los.n_classes * 3), 4 / (los.n_classes * 1))
    assert weighted.class_weights[2:] == (1.0,) * (los.n_classes - 2)  # classes absent from training: weight 1


def test_balanced_run_records_its_weights(tiny_ws):
    plain = train_run(config(fusion="early"), tiny_ws)
    weighted = train_run(config(fusion="early", class_weights="balanced"), tiny_ws)
    assert weighted.run_id != plain.run_id
    info = json.loads((weighted.run_dir / "config.json").read_text())
    assert info["class_weights"] == "balanced" and info["class_weight_values"][0] > 1  # deaths are the minority
    assert json.loads((plain.run_dir / "config.json").read_text())["class_weight_values"] is None
