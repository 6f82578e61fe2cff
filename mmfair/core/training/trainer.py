"""The trainer: ``fit`` trains a fusion model on a fold's training split and selects on its validation split.

It composes the pieces of this package: the optimizer (AdamW by default; Adam, SGD) over named parameter
groups (``optim.py``), mixed precision (``amp.py``: bfloat16 autocast where the GPU supports it, else float16
with a gradient scaler, on CUDA; float32 on CPU, where every kernel the built-in methods use is
deterministic, so CPU runs with the same seed are bit-identical (tested; ``torch.use_deterministic_algorithms``
is not switched on: it is process-global and its first call imports torch._inductor, ~2 s)), the epoch loop
(``loop.py``), the modulator's hooks (``hooks.py``), early stopping and checkpoint choice on validation
(``early_stopping.py``; the selection criterion is the task's: validation AUPRC, macro over labels for
multilabel tasks) and the resumable ``checkpoint.pt`` (``checkpoint.py``).

The names other modules import from here (``cpu_threads``, ``predict_logits``, ...) are re-exported below.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.fusion import FusionModel
from mmfair.core.training.amp import MixedPrecision, amp_dtype, autocast
from mmfair.core.training.checkpoint import CheckpointStore, TrainState
from mmfair.core.training.data import Split
from mmfair.core.training.early_stopping import EarlyStopping
from mmfair.core.training.hooks import ModulatorHooks
from mmfair.core.training.loop import drop_modality, train_epoch, validate_epoch
from mmfair.core.training.optim import build_optimizer, scaled_learning_rates
from mmfair.core.training.runtime import compiled_forward, cpu_threads, peak_memory_mb, seed_everything
from mmfair.core.training.validation import (
    EVAL_BATCH_SIZE,
    GROUP_ATTRIBUTES,
    IMAGE_EVAL_BATCH_SIZE,
    branch_scores,
    eval_batch_size,
    evaluate_split,
    group_aurocs,
    metrics_selection,
    predict_logits,
)

__all__ = [
    "EVAL_BATCH_SIZE", "GROUP_ATTRIBUTES", "IMAGE_EVAL_BATCH_SIZE", "Progress", "TrainOutcome", "amp_dtype",
    "autocast", "branch_scores", "build_optimizer", "compiled_forward", "cpu_threads", "drop_modality",
    "eval_batch_size", "evaluate_split", "fit", "group_aurocs", "metrics_selection", "peak_memory_mb",
    "predict_logits", "scaled_learning_rates", "seed_everything",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class TrainOutcome:
    state_dict: dict[str, torch.Tensor]
    history: pd.DataFrame
    best_epoch: int
    best_score: float
    seconds: float
    #: every epoch's weights (CPU), kept only when ``config.selection_rules`` asks for other rules
    epoch_states: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def fit(
    model: FusionModel,
    task: Any,
    splits: dict[str, Split],
    config: TrainConfig,
    device: torch.device,
    val_groups: dict[str, np.ndarray] | None = None,
    progress: Progress | None = None,
    description: str = "train",
    checkpoint: Path | None = None,
    modulator: Any | None = None,
    groups: Any | None = None,
) -> TrainOutcome:
    """Train ``model`` on ``splits['train']``, select on ``splits['val']``; returns the best weights.

    With ``checkpoint``, the full training state (weights, optimiser, RNG states, history, best weights)
    is saved there after every epoch and, when the file exists, training resumes from it: an
    interrupted run continues where it stopped and ends as an uninterrupted one would (bit-identical
    on CPU).

    ``modulator`` (see ``modulators/_base.py``) gets its hooks called around the loss, backward
    and epoch; ``groups`` (the sensitive group codes of the training rows) is added to each batch as
    ``batch["groups"]`` only when the modulator asks for it. Without a modulator nothing changes.
    """
    train, val = splits["train"], splits["val"]
    rows = _training_rows(model, train, config)
    state = _initial_state(model, config, device, modulator)
    group_codes = state.hooks.setup(model, task, train, config, groups, device)
    # the compiled module shares the model's parameters; validation and prediction use the eager model
    forward = compiled_forward(model, device) if config.compile else model
    store = CheckpointStore(checkpoint, device)
    started = time.perf_counter()
    first_epoch, seconds_before = _resume(store, state, config, description)
    started -= seconds_before
    if progress:
        progress(description, first_epoch - 1, config.epochs)
    for epoch in range(first_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        train_loss = train_epoch(state, forward, train, rows, task, config, epoch, device, group_codes)
        row, improved = validate_epoch(state, task, val, device, epoch, train_loss, t0, val_groups)
        log.info(
            "%s epoch %d/%d: train_loss %.4f val_loss %.4f val_auroc %.4f val_auprc %.4f (%.2fs)%s",
            description, epoch, config.epochs, train_loss, row["val_loss"], row["val_auroc"], row["val_auprc"],
            row["seconds"], " *" if improved else "",
        )
        store.save(state, time.perf_counter() - started)
        if progress:
            progress(description, epoch, config.epochs)
        if state.stopping.stopped:
            log.info("%s: early stop after epoch %d (best epoch %d)", description, epoch, state.stopping.overall.epoch)
            break
    best_state, best_epoch, best_score = _selected(state, task, val, device, description)
    return TrainOutcome(
        state_dict=best_state,
        history=pd.DataFrame(state.history),
        best_epoch=best_epoch,
        best_score=best_score,
        seconds=time.perf_counter() - started,
        epoch_states=state.stopping.epoch_states,
    )


def _training_rows(model: FusionModel, train: Split, config: TrainConfig) -> torch.Tensor:
    """The training rows the model can score (every modality it needs present)."""
    rows = torch.nonzero(model.scorable(train.present).cpu()).flatten()
    if len(rows) == 0:
        raise ConfigError(f"fold {config.fold}: no training stay has every modality that '{config.fusion}' needs")
    return rows


def _initial_state(model: FusionModel, config: TrainConfig, device: torch.device, modulator: Any | None) -> TrainState:
    return TrainState(
        model=model,
        optimizer=build_optimizer(model, config),
        amp=MixedPrecision(device),
        generator=torch.Generator().manual_seed(config.seed),
        dropout_generator=torch.Generator().manual_seed(config.seed + 1),
        hooks=ModulatorHooks(modulator),
        stopping=EarlyStopping(config.patience, tuple(model.independent_branches),
                               keep_epochs=any(rule != "overall" for rule in config.selection_rules)),
    )


def _resume(store: CheckpointStore, state: TrainState, config: TrainConfig, description: str) -> tuple[int, float]:
    """The first epoch still to train and the seconds trained before (1 and 0 without a checkpoint)."""
    seconds = store.resume(state)
    if seconds is None:
        return 1, 0.0
    log.info("%s: resuming after epoch %d from %s", description, len(state.history), store.path)
    if state.stopping.stopped:
        return config.epochs + 1, seconds  # it had already stopped early
    return len(state.history) + 1, seconds


def _selected(
    state: TrainState, task: Any, val: Split, device: torch.device, description: str
) -> tuple[dict[str, torch.Tensor], int, float]:
    """The weights to keep, their epoch and validation score: the best epoch's; with independent branches,
    every branch's own best epoch's (the latest of those epochs), scored together."""
    stopping = state.stopping
    assert stopping.overall.state is not None
    if not stopping.branches:
        return stopping.overall.state, stopping.overall.epoch, stopping.overall.score
    best_state = stopping.merged_branch_state(state.model)
    state.model.load_state_dict(best_state)
    best_score = metrics_selection(evaluate_split(state.model, task, val, device)[1])
    log.info(
        "%s: branches kept at their own best epochs (%s); fused validation selection %.4f",
        description, ", ".join(f"{m} {b.epoch}" for m, b in stopping.branches.items()), best_score,
    )
    return best_state, max(b.epoch for b in stopping.branches.values()), best_score
