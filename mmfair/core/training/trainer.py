"""The training loop: the optimizer (AdamW by default; Adam, SGD), gradient clipping, early stopping and
checkpoint choice on validation.

The optimizer has one parameter group per ``encoder:<modality>`` and one for the rest, all with the same
hyperparameters (so the update is that of a single group), which lets a gradient-scaling modulator scale one
encoder's learning rate for one step (``modulate_via=lr``, see ``modulators/_base.py``).

Batches are index slices of device-resident tensors (no DataLoader). AMP (bfloat16 autocast where the GPU
supports it, else float16 with a gradient scaler) on CUDA; float32 on CPU, where every kernel the
built-in methods use is deterministic, so CPU runs with the same seed are bit-identical (tested;
``torch.use_deterministic_algorithms`` is not switched on: it is process-global and its first call
imports torch._inductor, ~2 s). The selection criterion is the task's
(validation AUPRC, macro over labels for multilabel tasks); the best epoch's weights are kept.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from mmfair.core.config import TrainConfig
from mmfair.core.errors import ConfigError
from mmfair.core.io import atomic_path
from mmfair.core.fusion import FusionModel
from mmfair.core.training.data import Split

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
EVAL_BATCH_SIZE = 1024
IMAGE_EVAL_BATCH_SIZE = 128  # images mode: the CNN's activations, not the stays, bound the batch


def eval_batch_size(split: Split) -> int:
    """Stays per prediction pass: fewer when the split carries images (``--cxr-input images``)."""
    cxr = split.inputs.get("cxr")
    return IMAGE_EVAL_BATCH_SIZE if cxr is not None and cxr.dim() > 2 else EVAL_BATCH_SIZE
GROUP_ATTRIBUTES = ("race_group", "gender", "age_group", "insurance_group")


@dataclass
class TrainOutcome:
    state_dict: dict[str, torch.Tensor]
    history: pd.DataFrame
    best_epoch: int
    best_score: float
    seconds: float
    #: every epoch's weights (CPU), kept only when ``config.selection_rules`` asks for other rules
    epoch_states: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op CPU threads inside the block (0 keeps torch's setting).

    The models here are small and sequential (48 LSTM steps): one thread is about as fast as two on an
    idle machine and 10-100x faster on a busy one, where spinning OpenMP threads wait for each other.
    """
    previous = torch.get_num_threads()
    if n > 0 and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict_logits(
    model: FusionModel,
    split: Split,
    device: torch.device,
    present: dict[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Float32 logits [n, K] on the CPU for every row of ``split`` (eval mode, fixed batch size)."""
    was_training = model.training
    model.eval()
    chunks = []
    batch_size = batch_size or eval_batch_size(split)
    for start in range(0, len(split), batch_size):
        batch = split.batch(slice(start, start + batch_size), present)
        with autocast(device):
            chunks.append(model(batch).logits.float().cpu())
    model.train(was_training)
    if not chunks:
        return torch.zeros(0, 0)
    return torch.cat(chunks)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _label_array(labels: torch.Tensor) -> np.ndarray:
    return labels.cpu().numpy()


def group_aurocs(task: Any, labels: np.ndarray, probs: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """``val_auroc[<attribute>=<group>]`` for every group whose AUROC is defined (both classes present) and
    that passes the small-cell rule on validation (:func:`~mmfair.core.training.selection.large_enough`): a
    group of a handful of stays never drives the ``worst_group``/``pareto``/``dto`` selection rules."""
    from mmfair.core.training.selection import large_enough

    out: dict[str, float] = {}
    for attribute, values in groups.items():
        values = pd.Series(values, dtype="object")
        known = values.notna().to_numpy()
        text = values.astype(str).to_numpy()
        for group in sorted(set(text[known])):
            rows = known & (text == group)
            if not large_enough(labels[rows]):
                continue
            value = task.metrics(labels[rows], probs[rows])["auroc"]
            if not math.isnan(value):
                out[f"val_auroc[{attribute}={group}]"] = value
    return out


def evaluate_split(
    model: FusionModel, task: Any, split: Split, device: torch.device
) -> tuple[float, dict[str, float], np.ndarray, np.ndarray]:
    """Loss over scorable rows, task metrics, labels and probabilities (NaN where not scorable)."""
    logits = predict_logits(model, split, device)
    scorable = model.scorable(split.present).cpu()
    labels = split.labels.cpu()
    loss = float(task.loss(logits, labels, scorable)) if len(split) else float("nan")
    probs = task.probabilities(logits).double().numpy()
    probs[~scorable.numpy()] = np.nan
    return loss, task.metrics(_label_array(labels), probs), _label_array(labels), probs


def compiled_forward(model: FusionModel, device: torch.device) -> Callable[..., Any]:
    """``torch.compile(model)`` on CUDA (dynamic shapes: the last batch is smaller); the eager model elsewhere."""
    if device.type != "cuda":
        log.info("compile: ignored on %s (only CUDA runs are compiled)", device)
        return model
    return torch.compile(model, dynamic=True)


def drop_modality(
    present: dict[str, torch.Tensor], rate: float, generator: torch.Generator, modality: str = "cxr"
) -> dict[str, torch.Tensor]:
    """Train-time modality dropout: each present ``modality`` is removed with probability ``rate`` (drawn on
    the CPU from ``generator``, so CPU and GPU runs drop the same stays). The EHR is never dropped."""
    flags = present[modality]
    keep = torch.rand(flags.shape[0], generator=generator) >= rate
    return {**present, modality: flags & keep.to(flags.device)}


def _stopped(stale: int, branch_best: dict[str, dict[str, Any]], patience: int) -> bool:
    if branch_best:
        return all(entry["stale"] >= patience for entry in branch_best.values())
    return stale >= patience


def metrics_selection(metrics: dict[str, float]) -> float:
    score = metrics["selection"]
    return -math.inf if math.isnan(score) else score


@torch.no_grad()
def branch_scores(model: FusionModel, task: Any, split: Split, device: torch.device) -> dict[str, float]:
    """Each independent branch's own selection score on ``split``, over the stays with its modality."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {m: [] for m in model.independent_branches}
    step = eval_batch_size(split)
    for start in range(0, len(split), step):
        batch = split.batch(slice(start, start + step))
        with autocast(device):
            unimodal = model(batch).unimodal_logits
        for m in chunks:
            chunks[m].append(unimodal[m].float().cpu())
    model.train(was_training)
    labels = _label_array(split.labels)
    scores = {}
    for m, parts in chunks.items():
        probs = task.probabilities(torch.cat(parts)).double().numpy()
        probs[~split.present[m].cpu().numpy()] = np.nan
        score = task.metrics(labels, probs)["selection"]
        scores[m] = -math.inf if math.isnan(score) else score
    return scores


def _branch_keys(model: FusionModel, branch: str) -> list[str]:
    prefixes = tuple(f"{part}.{branch}." for part in ("encoders", "heads"))
    return [k for k in model.state_dict() if k.startswith(prefixes)]


def _clip_gradients(model: FusionModel, max_norm: float) -> None:
    """Clip jointly, or per branch when branches are independent (so one branch never scales another)."""
    if not model.independent_branches:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return
    named = dict(model.named_parameters())
    for branch in model.independent_branches:
        torch.nn.utils.clip_grad_norm_([named[k] for k in _branch_keys(model, branch) if k in named], max_norm)


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """``config.optimizer`` over named parameter groups: ``encoder:<m>`` each, then ``rest`` (everything, for a
    model whose parameters cannot be placed: it trains as before, and only lr-mode modulation needs groups)."""
    try:
        groups = model.param_groups() if hasattr(model, "param_groups") else {}
    except ValueError:
        groups = {}
    encoders = {k: v for k, v in groups.items() if k.startswith("encoder:")}
    taken = {id(p) for params in encoders.values() for p in params}
    rest = [p for p in model.parameters() if id(p) not in taken]
    param_groups = [{"params": v, "name": k} for k, v in encoders.items()] + ([{"params": rest, "name": "rest"}] if rest else [])
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)


@contextlib.contextmanager
def scaled_learning_rates(optimizer: torch.optim.Optimizer, factors: dict[str, float]) -> Iterator[None]:
    """Multiply the learning rate of the named parameter groups by ``factors`` inside the block (one step)."""
    saved = []
    for group in optimizer.param_groups:
        factor = factors.get(group.get("name", ""))
        if factor is not None:
            saved.append((group, group["lr"]))
            group["lr"] = group["lr"] * factor
    try:
        yield
    finally:
        for group, lr in saved:
            group["lr"] = lr


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
    optimizer = build_optimizer(model, config)
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    train_rows = torch.nonzero(model.scorable(train.present).cpu()).flatten()
    if len(train_rows) == 0:
        raise ConfigError(f"fold {config.fold}: no training stay has every modality that '{config.fusion}' needs")
    generator = torch.Generator().manual_seed(config.seed)
    # train-time modality dropout draws from its own stream, so switching it on leaves the batch order unchanged
    dropout_generator = torch.Generator().manual_seed(config.seed + 1)
    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    keep_epochs = any(rule != "overall" for rule in config.selection_rules)
    epoch_states: dict[int, dict[str, torch.Tensor]] = {}
    best_score, best_epoch, stale = -math.inf, 0, 0
    # Late fusion's branches share no parameter: each keeps the weights of its own best validation epoch
    # and stops on its own patience, as separately trained unimodal models would.
    branches = tuple(model.independent_branches)
    branch_best: dict[str, dict[str, Any]] = {
        m: {"score": -math.inf, "epoch": 0, "stale": 0, "state": {}} for m in branches
    }
    group_codes = None
    if modulator is not None:
        modulator.setup(model, task, train, config, groups, device)
        if modulator.needs_groups and groups is not None:
            group_codes = groups.codes.to(device)
    # the compiled module shares the model's parameters; validation and prediction use the eager model
    forward = compiled_forward(model, device) if config.compile else model
    started = time.perf_counter()
    first_epoch = 1
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
        generator.set_state(state["generator"])
        if state.get("dropout_generator") is not None:
            dropout_generator.set_state(state["dropout_generator"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history, best_state = state["history"], state["best_state"]
        best_score, best_epoch, stale = state["best_score"], state["best_epoch"], state["stale"]
        branch_best = state.get("branch_best") or branch_best
        epoch_states = state.get("epoch_states") or epoch_states
        if modulator is not None and state.get("modulator") is not None:
            modulator.load_state_dict(state["modulator"])
        first_epoch = len(history) + 1
        started -= state["seconds"]
        if _stopped(stale, branch_best, config.patience):
            first_epoch = config.epochs + 1  # it had already stopped early
        log.info("%s: resuming after epoch %d from %s", description, len(history), checkpoint)
    if progress:
        progress(description, first_epoch - 1, config.epochs)
    for epoch in range(first_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model.train()
        if modulator is not None:
            modulator.on_epoch_start(epoch)
        order = modulator.batch_order(train_rows, generator) if modulator is not None else None
        if order is None:
            order = train_rows[torch.randperm(len(train_rows), generator=generator)]
        order = order.to(device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            batch = train.batch(index)
            if config.modality_dropout > 0:
                batch["present"] = drop_modality(batch["present"], config.modality_dropout, dropout_generator)
            if group_codes is not None:
                batch["groups"] = group_codes[index]
            with autocast(device):
                output = forward(batch)
                if modulator is None:
                    loss = model.training_loss(output, batch, task)
                else:
                    loss = modulator.loss(model, output, batch, task)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if modulator is not None:
                modulator.after_backward(model, output, batch)
            if config.grad_clip is not None:
                _clip_gradients(model, config.grad_clip)
            with scaled_learning_rates(optimizer, modulator.lr_factors() if modulator is not None else {}):
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
            loss_sum += loss.detach().float() * len(index)
        train_loss = float(loss_sum) / len(order)
        val_loss, metrics, labels, probs = evaluate_split(model, task, val, device)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_auroc": metrics["auroc"],
            "val_auprc": metrics["auprc"],
            "seconds": time.perf_counter() - t0,
            "peak_memory_mb": peak_memory_mb(device),
        }
        if task.kind == "multiclass":
            row["val_kappa"] = metrics["selection"]
        if modulator is not None:
            row.update(modulator.on_epoch_end(epoch))
        if val_groups:
            row.update(group_aurocs(task, labels, probs, val_groups))
        if branches:
            current = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            for m, value in branch_scores(model, task, val, device).items():
                row[f"val_selection[branch={m}]"] = value
                entry = branch_best[m]
                if value > entry["score"] or not entry["state"]:
                    keys = _branch_keys(model, m)
                    entry.update(score=value, epoch=epoch, stale=0, state={k: current[k] for k in keys})
                else:
                    entry["stale"] += 1
        history.append(row)
        if keep_epochs:
            epoch_states[epoch] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        score = metrics["selection"]
        score = -math.inf if math.isnan(score) else score
        improved = best_state is None or score > best_score
        if improved:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        log.info(
            "%s epoch %d/%d: train_loss %.4f val_loss %.4f val_auroc %.4f val_auprc %.4f (%.2fs)%s",
            description, epoch, config.epochs, train_loss, val_loss, metrics["auroc"], metrics["auprc"],
            row["seconds"], " *" if improved else "",
        )
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "grad_scaler": scaler.state_dict() if scaler is not None else {},
                "generator": generator.get_state(), "dropout_generator": dropout_generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "history": history, "best_state": best_state, "best_score": best_score,
                "best_epoch": best_epoch, "stale": stale, "seconds": time.perf_counter() - started,
                "branch_best": branch_best,
                "modulator": modulator.state_dict() if modulator is not None else None,
                **({"epoch_states": epoch_states} if keep_epochs else {}),
            })  # fmt: skip
        if progress:
            progress(description, epoch, config.epochs)
        if _stopped(stale, branch_best, config.patience):
            log.info("%s: early stop after epoch %d (best epoch %d)", description, epoch, best_epoch)
            break
    assert best_state is not None
    if branches:
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        for entry in branch_best.values():
            best_state.update(entry["state"])
        model.load_state_dict(best_state)
        best_score = metrics_selection(evaluate_split(model, task, val, device)[1])
        best_epoch = max(entry["epoch"] for entry in branch_best.values())
        log.info(
            "%s: branches kept at their own best epochs (%s); fused validation selection %.4f",
            description, ", ".join(f"{m} {e['epoch']}" for m, e in branch_best.items()), best_score,
        )
    return TrainOutcome(
        state_dict=best_state,
        history=pd.DataFrame(history),
        best_epoch=best_epoch,
        best_score=best_score,
        seconds=time.perf_counter() - started,
        epoch_states=epoch_states,
    )
