"""The trainer's pieces on their own: the best-epoch record and early-stopping policy, mixed precision on the
CPU, the modulator hooks without a modulator, and a checkpoint store without a path. ``fit`` end to end
(resume bit-identical, branches at their own best epochs) is tested in test_training_runs.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmfair.core.training.amp import MixedPrecision, amp_dtype
from mmfair.core.training.checkpoint import CheckpointStore
from mmfair.core.training.early_stopping import BestEpoch, EarlyStopping
from mmfair.core.training.hooks import ModulatorHooks

CHECKPOINT_STOPPING_KEYS = {"best_state", "best_score", "best_epoch", "stale", "branch_best"}


class TwoBranches(nn.Module):
    """The state-dict layout of a late-fusion model: ``encoders.<m>.*`` and ``heads.<m>.*`` per branch."""

    independent_branches = ("ehr", "cxr")

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({m: nn.Linear(1, 1, bias=False) for m in self.independent_branches})
        self.heads = nn.ModuleDict({m: nn.Linear(1, 1, bias=False) for m in self.independent_branches})

    def set_all(self, value: float) -> None:
        with torch.no_grad():
            for p in self.parameters():
                p.fill_(value)


def test_best_epoch_keeps_the_first_offer_then_only_strict_improvements():
    best = BestEpoch()
    kept = [best.offer(score, epoch, lambda epoch=epoch: {"w": torch.tensor(float(epoch))})
            for epoch, score in enumerate([-math.inf, 0.4, 0.6, 0.6, 0.5], start=1)]
    # epoch 1 is kept although its score is -inf (nothing kept yet); a tie (epoch 4) is no improvement
    assert kept == [True, True, True, False, False]
    assert (best.epoch, best.score, best.stale, float(best.state["w"])) == (3, 0.6, 2, 3.0)


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    model = nn.Linear(1, 1)
    stopping = EarlyStopping(patience=2)
    stopped = []
    for epoch, score in enumerate([0.5, 0.7, 0.6, 0.65, 0.9], start=1):
        stopping.record(epoch, score, model)
        stopped.append(stopping.stopped)
    assert stopped == [False, False, False, True, False]  # two stale epochs after epoch 2 (then it improves)
    assert stopping.overall.epoch == 5 and stopping.epoch_states == {}


def test_branches_keep_their_own_best_epoch_and_stop_when_every_branch_has():
    model = TwoBranches()
    stopping = EarlyStopping(patience=1, branches=model.independent_branches, keep_epochs=True)
    scores = [{"ehr": 0.6, "cxr": 0.5}, {"ehr": 0.5, "cxr": 0.7}, {"ehr": 0.4, "cxr": 0.6}]
    stopped = []
    for epoch, branch_scores in enumerate(scores, start=1):
        model.set_all(float(epoch))  # every weight holds the epoch number
        stopping.record_branches(epoch, branch_scores, model)
        stopping.record(epoch, 0.0, model)
        stopped.append(stopping.stopped)
    # ehr is stale from epoch 2, cxr only from epoch 3
    assert stopped == [False, False, True]
    assert {m: b.epoch for m, b in stopping.branches.items()} == {"ehr": 1, "cxr": 2}
    merged = stopping.merged_branch_state(model)
    assert {k: float(v) for k, v in merged.items()} == {
        "encoders.ehr.weight": 1.0, "encoders.cxr.weight": 2.0, "heads.ehr.weight": 1.0, "heads.cxr.weight": 2.0,
    }
    assert sorted(stopping.epoch_states) == [1, 2, 3]


def test_early_stopping_state_round_trips_through_the_checkpoint_keys():
    model = TwoBranches()
    stopping = EarlyStopping(patience=1, branches=model.independent_branches)
    for epoch, score in enumerate([0.6, 0.5], start=1):
        stopping.record_branches(epoch, {"ehr": score, "cxr": score}, model)
        stopping.record(epoch, score, model)
    state = stopping.state_dict()
    assert set(state) == CHECKPOINT_STOPPING_KEYS  # epoch_states only when other selection rules ask for them
    assert set(EarlyStopping(1, keep_epochs=True).state_dict()) == CHECKPOINT_STOPPING_KEYS | {"epoch_states"}
    resumed = EarlyStopping(patience=1, branches=model.independent_branches)
    resumed.load_state_dict(state)
    assert resumed.stopped and (resumed.overall.epoch, resumed.overall.stale) == (1, 1)
    assert {m: (b.epoch, b.stale) for m, b in resumed.branches.items()} == {"ehr": (1, 1), "cxr": (1, 1)}


def test_mixed_precision_on_cpu_is_a_plain_float32_step():
    amp = MixedPrecision(torch.device("cpu"))
    assert amp.scaler is None and amp_dtype(torch.device("cpu")) is None and amp.state_dict() == {}
    w = nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([w], lr=0.1)
    with amp.autocast():
        loss = (2.0 * w).sum()
    assert loss.dtype == torch.float32
    amp.backward(loss, optimizer)
    assert float(w.grad) == 2.0
    amp.step(optimizer)
    assert float(w.detach()) == pytest.approx(0.8)  # 1 - 0.1 * 2


def test_hooks_without_a_modulator_are_the_plain_trainer():
    hooks = ModulatorHooks(None)
    rows = torch.tensor([10, 11, 12, 13])
    order = hooks.epoch_order(rows, torch.Generator().manual_seed(7))
    expected = rows[torch.randperm(4, generator=torch.Generator().manual_seed(7))]
    assert torch.equal(order, expected)
    assert hooks.setup(None, None, None, None, None, torch.device("cpu")) is None
    assert hooks.lr_factors() == {} and hooks.on_epoch_end(1) == {} and hooks.state_dict() is None


def test_checkpoint_store_without_a_path_saves_and_resumes_nothing(tmp_path):
    store = CheckpointStore(None, torch.device("cpu"))
    store.save(None, 1.0)  # type: ignore[arg-type]  (never read)
    assert store.resume(None) is None  # type: ignore[arg-type]
    assert CheckpointStore(tmp_path / "checkpoint.pt", torch.device("cpu")).resume(None) is None  # type: ignore[arg-type]
