"""The optimizer over named parameter groups, per-step learning-rate factors, and gradient clipping.

The optimizer has one parameter group per ``encoder:<modality>`` and one for the rest, all with the same
hyperparameters (so the update is that of a single group), which lets a gradient-scaling modulator scale one
encoder's learning rate for one step (``modulate_via=lr``, see ``modulators/_base.py``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from mmfair.core.config import TrainConfig
from mmfair.core.fusion import FusionModel


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


def branch_keys(model: FusionModel, branch: str) -> list[str]:
    """The state-dict keys of one independent branch (its encoder and its head)."""
    prefixes = tuple(f"{part}.{branch}." for part in ("encoders", "heads"))
    return [k for k in model.state_dict() if k.startswith(prefixes)]


def clip_gradients(model: FusionModel, max_norm: float) -> None:
    """Clip jointly, or per branch when branches are independent (so one branch never scales another)."""
    if not model.independent_branches:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        return
    named = dict(model.named_parameters())
    for branch in model.independent_branches:
        torch.nn.utils.clip_grad_norm_([named[k] for k in branch_keys(model, branch) if k in named], max_norm)
