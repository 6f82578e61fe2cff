"""One epoch of training and its validation.

Batches are index slices of device-resident tensors (no DataLoader), in the modulator's order or a random
permutation from the run's seeded generator. A step: autocast forward, the (modulator's) loss, backward with
unscaled gradients, the modulator's after-backward hook, clipping, then the optimizer step with the
modulator's per-group learning-rate factors.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from mmfair.core.config import TrainConfig
from mmfair.core.training.checkpoint import TrainState
from mmfair.core.training.data import Split
from mmfair.core.training.optim import clip_gradients, scaled_learning_rates
from mmfair.core.training.runtime import peak_memory_mb
from mmfair.core.training.validation import branch_scores, evaluate_split, group_aurocs, metrics_selection


def drop_modality(
    present: dict[str, torch.Tensor], rate: float, generator: torch.Generator, modality: str = "cxr"
) -> dict[str, torch.Tensor]:
    """Train-time modality dropout: each present ``modality`` is removed with probability ``rate`` (drawn on
    the CPU from ``generator``, so CPU and GPU runs drop the same stays). The EHR is never dropped."""
    flags = present[modality]
    keep = torch.rand(flags.shape[0], generator=generator) >= rate
    return {**present, modality: flags & keep.to(flags.device)}


def train_step(state: TrainState, forward: Callable[..., Any], batch: dict[str, Any], task: Any,
               config: TrainConfig) -> torch.Tensor:
    """One optimizer step on ``batch``; its (detached, float) mean loss."""
    model, optimizer, amp, hooks = state.model, state.optimizer, state.amp, state.hooks
    with amp.autocast():
        output = forward(batch)
        loss = hooks.loss(model, output, batch, task)
    optimizer.zero_grad(set_to_none=True)
    amp.backward(loss, optimizer)
    hooks.after_backward(model, output, batch)
    if config.grad_clip is not None:
        clip_gradients(model, config.grad_clip)
    with scaled_learning_rates(optimizer, hooks.lr_factors()):
        amp.step(optimizer)
    return loss.detach().float()


def train_epoch(state: TrainState, forward: Callable[..., Any], train: Split, rows: torch.Tensor, task: Any,
                config: TrainConfig, epoch: int, device: torch.device, group_codes: torch.Tensor | None) -> float:
    """Train one epoch over the training ``rows``; the mean training loss."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    state.model.train()
    state.hooks.on_epoch_start(epoch)
    order = state.hooks.epoch_order(rows, state.generator).to(device)
    loss_sum = torch.zeros((), device=device)
    for start in range(0, len(order), config.batch_size):
        index = order[start : start + config.batch_size]
        batch = train.batch(index)
        if config.modality_dropout > 0:
            batch["present"] = drop_modality(batch["present"], config.modality_dropout, state.dropout_generator)
        if group_codes is not None:
            batch["groups"] = group_codes[index]
        loss_sum += train_step(state, forward, batch, task, config) * len(index)
    return float(loss_sum) / len(order)


def validate_epoch(state: TrainState, task: Any, val: Split, device: torch.device, epoch: int, train_loss: float,
                   started: float, val_groups: dict[str, np.ndarray] | None) -> tuple[dict[str, float], bool]:
    """The epoch's history row (validation loss and metrics, modulator and group columns, each branch's
    selection score), offered to early stopping; the row, and whether the epoch is the new best."""
    model = state.model
    val_loss, metrics, labels, probs = evaluate_split(model, task, val, device)
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_auroc": metrics["auroc"],
        "val_auprc": metrics["auprc"],
        "seconds": time.perf_counter() - started,
        "peak_memory_mb": peak_memory_mb(device),
    }
    if task.kind == "multiclass":
        row["val_kappa"] = metrics["selection"]
    row.update(state.hooks.on_epoch_end(epoch))
    if val_groups:
        row.update(group_aurocs(task, labels, probs, val_groups))
    if state.stopping.branches:
        scores = branch_scores(model, task, val, device)
        row.update({f"val_selection[branch={m}]": value for m, value in scores.items()})
        state.stopping.record_branches(epoch, scores, model)
    state.history.append(row)
    return row, state.stopping.record(epoch, metrics_selection(metrics), model)
