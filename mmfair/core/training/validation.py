"""What the trainer measures on a split: logits, loss and task metrics, per-group AUROCs, and each independent
branch's own selection score (eval mode, fixed batch sizes, float32 results on the CPU)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from mmfair.core.config import DEFAULT_ATTRIBUTES
from mmfair.core.fusion import FusionModel
from mmfair.core.training.amp import autocast
from mmfair.core.training.data import Split

EVAL_BATCH_SIZE = 1024
IMAGE_EVAL_BATCH_SIZE = 128  # images mode: the CNN's activations, not the stays, bound the batch
GROUP_ATTRIBUTES = DEFAULT_ATTRIBUTES


def eval_batch_size(split: Split) -> int:
    """Stays per prediction pass: fewer when the split carries images (``--cxr-input images``)."""
    cxr = split.inputs.get("cxr")
    return IMAGE_EVAL_BATCH_SIZE if cxr is not None and cxr.dim() > 2 else EVAL_BATCH_SIZE


@torch.no_grad()
def predict_logits(
    model: FusionModel,
    split: Split,
    device: torch.device,
    present: dict[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Float32 logits [n, K] on the CPU for every row of ``split`` (eval mode, fixed batch size). The batches'
    logits stay on the device until the end: one host copy per split, not one synchronising copy per batch."""
    was_training = model.training
    model.eval()
    chunks = []
    batch_size = batch_size or eval_batch_size(split)
    for start in range(0, len(split), batch_size):
        batch = split.batch(slice(start, start + batch_size), present)
        with autocast(device):
            chunks.append(model(batch).logits.float())
    model.train(was_training)
    if not chunks:
        return torch.zeros(0, 0)
    return torch.cat(chunks).cpu()


def metrics_selection(metrics: dict[str, float]) -> float:
    """The task's selection score, −inf when undefined (so any defined score beats it)."""
    score = metrics["selection"]
    return -math.inf if math.isnan(score) else score


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
    return loss, task.metrics(labels.numpy(), probs), labels.numpy(), probs


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
            chunks[m].append(unimodal[m].float())
    model.train(was_training)
    labels = split.labels.cpu().numpy()
    scores = {}
    for m, parts in chunks.items():
        probs = task.probabilities(torch.cat(parts).cpu()).double().numpy()
        probs[~split.present[m].cpu().numpy()] = np.nan
        scores[m] = metrics_selection(task.metrics(labels, probs))
    return scores
