"""The CXR encoder stage of prep: fit a small timm CNN on non-cohort radiographs, then embed the cohort's.

The default encoder never sees a cohort patient (DESIGN §3.2). It is trained from scratch on the frontal
images and CheXpert labels of MIMIC-CXR subjects outside the ICU cohort; 20 % of those *subjects* are held
out to report a per-finding AUROC and to pick the best epoch. Cohort images are only ever embedded.

CheXpert labels, "U-Ignore": 1 is positive, 0 and blank (NaN, "not mentioned") are negative, and −1
(uncertain) is masked out of both the loss and the held-out AUROC.

Three paths:

* **trained** (the default): enough non-cohort images → trained from random init, multi-label BCE over the
  findings with 10+ positives, AdamW with a cosine LR over the steps that fit ``encoder_time_budget_s``
  (or ``encoder_max_epochs``), keeping the epoch with the best held-out mean AUROC. The budget covers the
  whole stage: training, held-out evaluations and embedding the cohort. The held-out part both picks the
  epoch and reports the AUROC, so the reported value is slightly optimistic;
* **random-init** fallback: fewer than ``MIN_TRAIN_IMAGES`` images, fewer than two subjects, or no finding
  with enough positives → a seeded random network, with a warning, recorded in the attrs;
* **external weights** (``cxr_weights``): loaded and used as is, embed only (no fine-tuning, so the
  run is cheap and the weights' provenance stays what the file says). Weights trained on MIMIC-CXR may
  have seen the cohort's test patients, which is warned about.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmfair.core.config import PrepConfig
from mmfair.core.device import resolve_device
from mmfair.core.encoders.cxr import (
    IMAGENET_GRAY_MEAN,
    IMAGENET_GRAY_STD,
    CXRBackbone,
    build_cxr_backbone,
    file_sha256,
    resize_uint8,
    to_input,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

MIN_TRAIN_IMAGES = 200
MIN_TRAIN_SUBJECTS = 2
MIN_POSITIVES = 10  # per finding, positives and negatives in the training part, to train on it
HELDOUT_FRACTION = 0.2
BATCH_SIZE = 64
EMBED_BATCH = 256
LR = 2e-3
WEIGHT_DECAY = 1e-4
WARMUP_STEPS = 20
LABEL_POLICY = "U-Ignore: 1 positive; 0 and blank negative; -1 masked from loss and AUROC"


@dataclass
class EncoderResult:
    """What the encoder stage hands to prep: the ``/cxr/embeddings/<encoder_id>`` dataset and its attrs."""

    encoder_id: str
    embeddings: np.ndarray  # float16 [N_img, D]
    attrs: dict[str, Any]
    heldout_auroc: dict[str, float] = field(default_factory=dict)
    random_init: bool = False
    seconds: float = 0.0
    #: the backbone's weights (timm state dict as arrays), saved in the store for image-mode training
    backbone_state: dict[str, np.ndarray] | None = None


def fit_and_embed(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    train_subjects: np.ndarray,
    finding_names: Sequence[str],
    cohort_images: np.ndarray,
    config: PrepConfig,
    device: str = "auto",
    progress: Progress | None = None,
    seed: int = 0,
) -> EncoderResult:
    """Fit the CXR encoder on non-cohort images and embed the cohort's images.

    Args:
        train_images: uint8 ``[M, S, S]`` frontal images of subjects NOT in the cohort.
        train_labels: float32 ``[M, K]`` CheXpert values: 1, 0, −1 (uncertain), NaN (blank).
        train_subjects: int64 ``[M]`` subject ids; the held-out split is by subject.
        finding_names: the K CheXpert column names.
        cohort_images: uint8 ``[N_img, S2, S2]``, only embedded (resized to ``encoder_image_size``).
        config: the prep config (``cxr_encoder``, ``cxr_weights``, ``encoder_image_size``,
            ``encoder_time_budget_s``, ``encoder_max_epochs``; ``workers`` sets CPU threads, 0 = all cores).
        device: ``auto``, ``cpu`` or ``cuda[:N]``; CUDA trains with mixed precision.
        progress: optional ``(description, done, total)`` callback.
        seed: seeds the split, the init, the batches and the augmentation. On CPU the result is
            identical for a seed as long as the time budget does not cut training short.

    Returns:
        An :class:`EncoderResult` with float16 ``[N_img, D]`` embeddings.
    """
    t0 = time.perf_counter()
    train_images, train_labels, train_subjects, cohort_images = _check_inputs(
        train_images, train_labels, train_subjects, finding_names, cohort_images
    )
    finding_names = [str(f) for f in finding_names]
    dev = resolve_device(device)
    size = config.encoder_image_size
    model_name = config.cxr_encoder
    subjects_hash = _subjects_hash(train_subjects)

    with _cpu_threads(config.workers if dev.type == "cpu" else None), _seeded(seed, dev):
        if config.cxr_weights is not None:
            backbone = build_cxr_backbone(model_name, config.cxr_weights, size)  # checks the file first
            weights_sha = file_sha256(config.cxr_weights)
            logger.warning(
                "loading CXR encoder weights from %s (sha256 %s…): weights trained on MIMIC-CXR may have seen "
                "the cohort's test patients; they are used as is, without fine-tuning",
                config.cxr_weights,
                weights_sha[:12],
            )
            cfg = getattr(backbone.model, "pretrained_cfg", {}) or {}
            mean = float(np.mean(cfg.get("mean", (IMAGENET_GRAY_MEAN,))))
            std = float(np.mean(cfg.get("std", (IMAGENET_GRAY_STD,))))
            fit = _Fit(source=weights_sha, weights=weights_sha, mean=mean, std=std)
        else:
            reason = _fallback_reason(train_labels, train_subjects, finding_names, seed)
            if reason is None:
                backbone, fit = _train(
                    train_images, train_labels, train_subjects, finding_names, config, dev, seed, t0,
                    n_cohort=len(cohort_images), progress=progress,
                )
                if fit.steps == 0:
                    logger.warning(
                        "CXR encoder: the %.0f s time budget ran out before the first training step; the "
                        "encoder is random-init (raise encoder_time_budget_s)", config.encoder_time_budget_s,
                    )
                    fit.random_init, fit.trained, fit.weights = True, False, "random-init"
                    fit.source = f"random-init-seed{seed}"
                    fit.fallback_reason = "time budget ran out before the first training step"
            else:
                logger.warning(
                    "CXR encoder: %s; falling back to a random-init %s (seed %d). Its embeddings carry "
                    "little information; recorded as random-init in the attrs",
                    reason, model_name, seed,
                )
                backbone = build_cxr_backbone(model_name, None, size)
                fit = _Fit(
                    source=f"random-init-seed{seed}", weights="random-init", mean=IMAGENET_GRAY_MEAN,
                    std=IMAGENET_GRAY_STD, random_init=True, fallback_reason=reason,
                    heldout_auroc={f: float("nan") for f in finding_names},
                )

        cohort = resize_uint8(torch.from_numpy(cohort_images), size)
        embeddings = _embed(backbone, cohort, fit.mean, fit.std, dev, progress=progress)

    if not np.isfinite(embeddings).all():
        raise RuntimeError(f"CXR encoder {model_name} produced non-finite float16 embeddings")
    seconds = time.perf_counter() - t0
    encoder_id = _encoder_id(model_name, size, fit.source, subjects_hash if fit.trained else "")
    attrs = _attrs(model_name, size, config, fit, train_images, train_subjects, subjects_hash, seconds,
                   backbone.num_features, seed)
    logger.info(
        "CXR encoder %s: %d cohort images embedded (D=%d) in %.1f s", encoder_id, len(embeddings),
        embeddings.shape[1], seconds,
    )
    return EncoderResult(
        encoder_id=encoder_id,
        embeddings=embeddings,
        attrs=attrs,
        heldout_auroc=dict(fit.heldout_auroc),
        random_init=fit.random_init,
        seconds=seconds,
        backbone_state={k: v.detach().cpu().numpy() for k, v in backbone.model.state_dict().items()},
    )


@dataclass
class _Fit:
    source: str  # what identifies the weights in the encoder id
    weights: str  # attrs["weights"]: sha256, "random-init" or "trained-on-noncohort"
    mean: float
    std: float
    random_init: bool = False
    trained: bool = False
    fallback_reason: str = ""
    heldout_auroc: dict[str, float] = field(default_factory=dict)
    findings_trained: list[str] = field(default_factory=list)
    epochs_run: float = 0.0
    best_epoch: int = 0
    steps: int = 0
    n_fit_images: int = 0
    n_heldout_images: int = 0
    n_heldout_subjects: int = 0
    stopped_by: str = ""
    train_images_per_s: float = 0.0


# ---------------------------------------------------------------------------------------------------- training


def _split_subjects(subjects: np.ndarray, seed: int) -> np.ndarray:
    """Boolean mask of held-out images: ~HELDOUT_FRACTION of the subjects, at least one, never all."""
    uniq = np.unique(subjects)
    rng = np.random.default_rng(seed)
    n_hold = min(len(uniq) - 1, max(1, round(HELDOUT_FRACTION * len(uniq))))
    held = rng.permutation(uniq)[:n_hold]
    return np.isin(subjects, held)


def _targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U-Ignore: target 1 where the label is 1 (else 0), mask 0 where it is −1 (uncertain)."""
    target = (labels == 1).astype(np.float32)
    mask = (labels != -1).astype(np.float32)  # NaN != -1, so blanks count as negatives
    return target, mask


def _trainable(labels: np.ndarray) -> np.ndarray:
    target, mask = _targets(labels)
    pos = (target * mask).sum(0)
    neg = ((1 - target) * mask).sum(0)
    return (pos >= MIN_POSITIVES) & (neg >= MIN_POSITIVES)


def _fallback_reason(labels: np.ndarray, subjects: np.ndarray, names: list[str], seed: int) -> str | None:
    m, n_subj = len(labels), len(np.unique(subjects))
    if m < MIN_TRAIN_IMAGES:
        return f"only {m} non-cohort training images (< {MIN_TRAIN_IMAGES})"
    if n_subj < MIN_TRAIN_SUBJECTS:
        return f"only {n_subj} non-cohort subject(s) (< {MIN_TRAIN_SUBJECTS}), no subject-level held-out split"
    held = _split_subjects(subjects, seed)
    if not _trainable(labels[~held]).any():
        return (
            f"no CheXpert finding among {len(names)} has {MIN_POSITIVES}+ positives and negatives in the "
            "training part"
        )
    return None


def _train(
    images: np.ndarray,
    labels: np.ndarray,
    subjects: np.ndarray,
    names: list[str],
    config: PrepConfig,
    dev: torch.device,
    seed: int,
    t0: float,
    n_cohort: int,
    progress: Progress | None,
) -> tuple[CXRBackbone, _Fit]:
    size = config.encoder_image_size
    budget = config.encoder_time_budget_s
    max_epochs = config.encoder_max_epochs
    held = _split_subjects(subjects, seed)
    keep = _trainable(labels[~held])
    used = [n for n, k in zip(names, keep) if k]
    target, mask = _targets(labels[:, keep])

    all_imgs = resize_uint8(torch.from_numpy(images), size)
    fit_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
    x_fit, x_held = all_imgs[fit_idx], all_imgs[held_idx]
    sample = x_fit[:: max(1, len(x_fit) // 2000)].float()  # pixel statistics from ≤ ~2000 images
    mean = float(sample.mean() / 255.0)
    std = max(float(sample.std() / 255.0), 1e-3)
    y_fit, m_fit = torch.from_numpy(target[fit_idx]), torch.from_numpy(mask[fit_idx])
    if dev.type == "cuda":  # the uint8 set is small: keep it on the GPU, augment there
        x_fit, y_fit, m_fit = x_fit.to(dev), y_fit.to(dev), m_fit.to(dev)
    y_held, m_held = target[held_idx], mask[held_idx]
    logger.info(
        "CXR encoder: training %s at %d px on %d images (%d subjects), holding out %d images (%d subjects); "
        "findings: %s",
        config.cxr_encoder, size, len(fit_idx), len(np.unique(subjects[fit_idx])), len(held_idx),
        len(np.unique(subjects[held_idx])), ", ".join(used),
    )

    backbone = build_cxr_backbone(config.cxr_encoder, None, size)
    head = nn.Linear(backbone.num_features, len(used))
    net = nn.Sequential(backbone, head).to(dev, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    amp_dtype = _amp_dtype(dev)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    n = len(fit_idx)
    steps_per_epoch = max(1, n // BATCH_SIZE)  # the last partial batch is dropped: BatchNorm and speed
    fit = _Fit(
        source=f"trained-on-noncohort-seed{seed}", weights="trained-on-noncohort", mean=mean, std=std,
        trained=True, findings_trained=used, n_fit_images=n, n_heldout_images=len(held_idx),
        n_heldout_subjects=len(np.unique(subjects[held_idx])),
    )
    best_score, best_state, best_auroc = -math.inf, None, {}
    eval_s: float | None = None
    embed_rate: float | None = None
    step, stopped = 0, "max_epochs"
    t_train = time.perf_counter()

    def evaluate(epoch: int) -> None:
        nonlocal best_score, best_state, best_auroc, eval_s, embed_rate
        te = time.perf_counter()
        logits = _forward_all(net, x_held, mean, std, dev)
        eval_s = time.perf_counter() - te
        embed_rate = len(x_held) / max(eval_s, 1e-6)
        auroc = _auroc_per_finding(y_held, m_held, logits, used)
        vals = [v for v in auroc.values() if not math.isnan(v)]
        score = float(np.mean(vals)) if vals else -1.0  # an undefined score still beats "nothing kept"
        logger.info(
            "CXR encoder epoch %d: held-out mean AUROC %.3f (%s) [%.0f s]", epoch,
            score, ", ".join(f"{k} {v:.2f}" for k, v in auroc.items()), time.perf_counter() - t0,
        )
        if score > best_score:
            best_score, best_auroc, fit.best_epoch = score, auroc, epoch
            best_state = copy.deepcopy(backbone.state_dict())

    def reserve_s() -> float:
        # Room for one held-out evaluation and for embedding the cohort afterwards, with a margin.
        rate = embed_rate or (BATCH_SIZE / max(batch_s, 1e-6)) * 3.0
        return 1.25 * ((eval_s if eval_s is not None else len(x_held) / rate) + n_cohort / rate) + 0.5

    def plan(step_s: float) -> int:
        """Total steps that fit the budget at ``step_s`` seconds a step (evaluations included)."""
        left = budget - (time.perf_counter() - t0) - reserve_s()
        return int(min(max_steps, max(step + 1, step + math.floor(left / max(step_s, 1e-9)))))

    max_steps = max_epochs * steps_per_epoch
    planned = max_steps  # the cosine runs over the steps that fit, so the LR has decayed when time runs out
    batch_s = 0.0
    epoch, evaluated_at = 0, -1
    while step < planned:
        net.train()
        perm = torch.from_numpy(rng.permutation(n)).to(x_fit.device)
        te = time.perf_counter()
        for b in range(steps_per_epoch):
            elapsed = time.perf_counter() - t0
            # the reserve is estimated from the step time, which is not known until the warm-up steps are
            # done: a slow first step on a busy machine would otherwise stop training after one step
            if step >= planned or elapsed > budget or (step > WARMUP_STEPS and elapsed + reserve_s() > budget):
                break
            tb = time.perf_counter()
            idx = perm[b * BATCH_SIZE : (b + 1) * BATCH_SIZE]
            x = _augment(x_fit[idx], gen, mean, std).to(dev, non_blocking=True)
            y, m = y_fit[idx].to(dev), m_fit[idx].to(dev)
            for g in opt.param_groups:
                g["lr"] = _lr(step, planned)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = net(x)
            loss = (F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none") * m).sum()
            loss = loss / m.sum().clamp(min=1.0)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            step += 1
            dt = time.perf_counter() - tb
            batch_s = 0.8 * batch_s + 0.2 * dt if step > WARMUP_STEPS else dt  # the first steps are warm-up
            if step == 10 and epoch == 0:
                # a first guess, before an epoch has been timed; evaluations not yet included
                planned = plan(batch_s * (1.0 + 3.0 / max(steps_per_epoch, 1)))
            if progress is not None:
                progress("CXR encoder: training", step, planned)
        else:
            epoch += 1
            evaluate(epoch)
            evaluated_at = step
            if epoch <= 2:  # epoch 2's time no longer includes warm-up
                planned = plan((time.perf_counter() - te) / steps_per_epoch)
                if planned < max_steps:
                    logger.info("CXR encoder: about %.1f epochs fit the %.0f s budget", planned / steps_per_epoch,
                                budget)
            continue
        break
    if step < max_steps:
        stopped = "time_budget"
    if step != evaluated_at:
        evaluate(epoch + 1 if step else 0)
    train_s = time.perf_counter() - t_train
    if stopped == "time_budget":
        logger.info("CXR encoder: stopped by the %.0f s time budget after %d steps", budget, step)

    if best_state is not None:
        backbone.load_state_dict(best_state)
    backbone = backbone.to(dev)
    fit.heldout_auroc = {f: best_auroc.get(f, float("nan")) for f in names}
    fit.epochs_run = round(step / steps_per_epoch, 3)
    fit.steps = step
    fit.stopped_by = stopped
    fit.train_images_per_s = round(step * BATCH_SIZE / max(train_s, 1e-6), 1)
    return backbone, fit


WARMUP_STEPS = 3  # steps whose time says little about the steady-state step time


def _lr(step: int, total: int) -> float:
    warm = min(1.0, (step + 1) / WARMUP_STEPS)
    progress = min(1.0, step / max(1, total))
    return LR * warm * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _augment(images: torch.Tensor, gen: torch.Generator, mean: float, std: float) -> torch.Tensor:
    """Light CXR augmentation: scale 0.9–1.1, ±5° rotation, ±5 % shift, brightness/contrast ±10 %.

    No horizontal flip: the heart is on the patient's left, and a flip would make situs inversus normal.
    """
    b, dev = images.shape[0], images.device
    x = images.unsqueeze(1).float().div_(255.0)
    # parameters are drawn on the CPU generator, so a seed means the same augmentation on any device
    scale = torch.empty(b).uniform_(0.9, 1.1, generator=gen)
    angle = torch.empty(b).uniform_(-5.0, 5.0, generator=gen) * (math.pi / 180.0)
    shift = torch.empty(b, 2).uniform_(-0.1, 0.1, generator=gen)  # grid units: 0.1 = 5 % of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(dev), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.9, 1.1, generator=gen).to(dev)
    bright = torch.empty(b, 1, 1, 1).uniform_(-0.1, 0.1, generator=gen).to(dev)
    mu = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mu) * contrast + mu + bright).clamp_(0.0, 1.0)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


def _auroc_per_finding(y: np.ndarray, m: np.ndarray, logits: np.ndarray, names: list[str]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    out = {}
    for j, name in enumerate(names):
        ok = m[:, j] > 0
        yj = y[ok, j]
        if len(np.unique(yj)) < 2:
            out[name] = float("nan")
        else:
            out[name] = round(float(roc_auc_score(yj, logits[ok, j])), 4)
    return out


# --------------------------------------------------------------------------------------------------- inference


@torch.inference_mode()
def _forward_all(net: nn.Module, images: torch.Tensor, mean: float, std: float, dev: torch.device,
                 progress: Progress | None = None, desc: str = "") -> np.ndarray:
    net.eval()
    amp_dtype = _amp_dtype(dev)
    outs = []
    for i in range(0, len(images), EMBED_BATCH):
        x = to_input(images[i : i + EMBED_BATCH], mean, std).to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outs.append(net(x).float().cpu())
        if progress is not None:
            progress(desc, min(i + EMBED_BATCH, len(images)), len(images))
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()


def _embed(backbone: CXRBackbone, images: torch.Tensor, mean: float, std: float, dev: torch.device,
           progress: Progress | None = None) -> np.ndarray:
    backbone = backbone.to(dev, memory_format=torch.channels_last)
    feats = _forward_all(backbone, images, mean, std, dev, progress, "CXR encoder: embedding")
    if len(images) == 0:
        return np.zeros((0, backbone.num_features), dtype=np.float16)
    return feats.astype(np.float16)


# --------------------------------------------------------------------------------------------------- plumbing


def _check_inputs(train_images, train_labels, train_subjects, finding_names, cohort_images):
    train_images = np.asarray(train_images)
    cohort_images = np.asarray(cohort_images)
    train_labels = np.asarray(train_labels, dtype=np.float32)
    train_subjects = np.asarray(train_subjects, dtype=np.int64)
    for name, arr in (("train_images", train_images), ("cohort_images", cohort_images)):
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
            raise ValueError(f"{name} must be uint8 [N, S, S], got {arr.dtype} {arr.shape}")
    m = len(train_images)
    if train_labels.ndim != 2 or train_labels.shape != (m, len(finding_names)):
        raise ValueError(f"train_labels must be [{m}, {len(finding_names)}], got {train_labels.shape}")
    if train_subjects.shape != (m,):
        raise ValueError(f"train_subjects must be [{m}], got {train_subjects.shape}")
    bad = ~np.isnan(train_labels) & ~np.isin(train_labels, (-1.0, 0.0, 1.0))
    if bad.any():
        raise ValueError(f"train_labels must hold 1, 0, -1 or NaN; found {np.unique(train_labels[bad])[:5]}")
    return train_images, train_labels, train_subjects, cohort_images


def _amp_dtype(dev: torch.device) -> torch.dtype | None:
    if dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextmanager
def _cpu_threads(workers: int | None) -> Iterator[None]:
    if workers is None:
        yield
        return
    n = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _seeded(seed: int, dev: torch.device) -> Iterator[None]:
    # Fork the global RNGs so seeding here does not change the caller's random stream.
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _subjects_hash(subjects: np.ndarray) -> str:
    ids = ",".join(str(int(s)) for s in np.unique(subjects))
    return hashlib.sha256(ids.encode()).hexdigest()


def _encoder_id(model_name: str, size: int, source: str, subjects_hash: str) -> str:
    blob = json.dumps([model_name, source, subjects_hash, size], separators=(",", ":"))
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name).strip("_") or "encoder"
    return f"{slug}-{size}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def _json(obj: Any) -> str:
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        return v

    if isinstance(obj, dict):
        obj = {k: clean(v) for k, v in obj.items()}
    return json.dumps(obj, sort_keys=False, separators=(",", ":"))


def _attrs(model_name, size, config, fit: _Fit, train_images, train_subjects, subjects_hash, seconds, dim,
           seed) -> dict[str, Any]:
    import timm

    return {
        "model": model_name,
        "timm_version": timm.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "weights": fit.weights,
        "weights_sha256": fit.weights if config.cxr_weights is not None else "",
        "random_init": bool(fit.random_init),
        "fallback_reason": fit.fallback_reason,
        "image_size": int(size),
        "embedding_dim": int(dim),
        "seed": int(seed),
        "train_subjects_hash": subjects_hash if fit.trained else "",
        "n_train_images": int(len(train_images)) if fit.trained else 0,
        "n_train_subjects": int(len(np.unique(train_subjects))) if fit.trained else 0,
        "n_available_images": int(len(train_images)),
        "n_fit_images": fit.n_fit_images,
        "n_heldout_images": fit.n_heldout_images,
        "n_heldout_subjects": fit.n_heldout_subjects,
        "heldout_auroc": _json(fit.heldout_auroc),
        "findings_trained": _json(fit.findings_trained),
        "label_policy": LABEL_POLICY,
        "time_budget_s": float(config.encoder_time_budget_s),
        "max_epochs": int(config.encoder_max_epochs),
        "epochs_run": float(fit.epochs_run),
        "best_epoch": int(fit.best_epoch),
        "steps": int(fit.steps),
        "stopped_by": fit.stopped_by,
        "train_images_per_s": float(fit.train_images_per_s),
        "norm_mean": round(float(fit.mean), 6),
        "norm_std": round(float(fit.std), 6),
        "seconds": round(float(seconds), 2),
    }
