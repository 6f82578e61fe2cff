"""The CXR encoder stage of prep: fit a small timm CNN on non-cohort radiographs, then embed the cohort's.

The default encoder never sees a cohort patient (DESIGN §3.2). It is trained from scratch on the frontal
images and CheXpert labels of MIMIC-CXR subjects outside the ICU cohort; 20 % of those *subjects* are held
out to report a per-finding AUROC and to pick the best epoch. Cohort images are only ever embedded.

CheXpert labels, "U-Ignore": 1 is positive, 0 and blank (NaN, "not mentioned") are negative, and −1
(uncertain) is masked out of both the loss and the held-out AUROC.

Three paths:

* **trained** (the default): enough non-cohort images → trained from random init, multi-label BCE over the
  findings with 10+ positives, AdamW with a cosine LR over ``encoder_max_steps`` steps (fewer when
  ``encoder_max_epochs`` epochs come first), keeping the epoch with the best held-out mean AUROC. The stop
  is a step count, never a clock, and CPU training runs with torch's deterministic algorithms, a fixed
  thread count and its own seeded generators, so a seed gives bit-identical weights and embeddings on CPU
  on any machine with the same CPU kernels (on GPU up to float nondeterminism). ``encoder_time_budget_s``
  optionally caps the whole stage (training, held-out evaluations, embedding the cohort) by wall clock;
  then the number of steps, and every result downstream, depends on the machine, which prep warns about.
  The held-out part both picks the epoch and reports the AUROC, so the reported value is slightly
  optimistic;
* **random-init** fallback: fewer than ``MIN_TRAIN_IMAGES`` images, fewer than two subjects, or no finding
  with enough positives → a seeded random network, with a warning, recorded in the attrs;
* **external weights** (``cxr_weights``): a timm file, or a :data:`~mmfair.core.encoders.cxr.CXR_PRESETS`
  format (torchxrayvision's DenseNet-121, with its own 224 px, [−1024, 1024] preprocessing), loaded and
  used as is, embed only (no fine-tuning, so the run is cheap and the weights' provenance stays what the
  file says).

Every path records an encoder card (``pretraining_*`` attrs, and ``prep.json``): mmfair's own encoder saw
non-cohort MIMIC-CXR subjects only; weights pretrained on MIMIC-CXR (torchxrayvision ``all``/``mimic_*``,
RAD-DINO) may have seen the cohort's test patients, which prep warns about loudly.
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmfair.core.config import PrepConfig
from mmfair.core.device import resolve_device
from mmfair.core.encoders.cxr import (
    CXR_PRESETS,
    IMAGENET_GRAY_MEAN,
    IMAGENET_GRAY_STD,
    OWN_CARD_TEXT,
    CXRBackbone,
    EncoderCard,
    build_cxr_backbone,
    declared_card,
    resize_uint8,
    to_input,
)
from mmfair.core.encoders.cxr_images import CXRImageSpec, augment_images
from mmfair.core.io import file_sha256
from mmfair.core.training.amp import MixedPrecision, autocast
from mmfair.core.training.early_stopping import BestEpoch
from mmfair.core.training.runtime import cpu_threads

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
WARMUP_STEPS = 3  # LR warm-up; also the steps whose time says little about the steady-state step time
LABEL_POLICY = "U-Ignore: 1 positive; 0 and blank negative; -1 masked from loss and AUROC"
#: Light CXR augmentation: ±5° rotation, scale 0.9–1.1, ±5 % shift, brightness/contrast ±10 %. No
#: horizontal flip: the heart is on the patient's left, and a flip would make situs inversus normal.
AUGMENT = dict(rotate=5.0, scale=0.1, translate=0.05, jitter=0.1)


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
    #: what the weights saw before prep (also in ``attrs`` as ``pretraining_*``)
    card: EncoderCard | None = None


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
        config: the prep config (``cxr_encoder``, ``cxr_weights``, ``cxr_pretraining``, ``encoder_image_size``,
            ``encoder_max_steps``, ``encoder_max_epochs``, ``encoder_time_budget_s``, ``encoder_threads``).
        device: ``auto``, ``cpu`` or ``cuda[:N]``; CUDA trains with mixed precision.
        progress: optional ``(description, done, total)`` callback.
        seed: seeds the split, the init, the batches and the augmentation. On CPU the result is
            bit-identical for a seed and thread count unless a time budget is set.

    Returns:
        An :class:`EncoderResult` with float16 ``[N_img, D]`` embeddings.
    """
    t0 = time.perf_counter()
    train_images, train_labels, train_subjects, cohort_images = _check_inputs(
        train_images, train_labels, train_subjects, finding_names, cohort_images
    )
    finding_names = [str(f) for f in finding_names]
    dev = resolve_device(device)
    preset = CXR_PRESETS.get(config.cxr_encoder) if config.cxr_encoder in CXR_PRESETS else None
    size = preset.image_size if preset is not None else config.encoder_image_size

    with _reproducible(seed, dev, config.encoder_threads):
        if config.cxr_weights is not None or preset is not None:
            backbone, fit, card = _load_external(config, size)
        else:
            backbone, fit, card = _own_backbone(
                train_images, train_labels, train_subjects, finding_names, config, dev, seed, t0,
                n_cohort=len(cohort_images), progress=progress,
            )
        cohort = resize_uint8(torch.from_numpy(cohort_images), size)
        embeddings = _embed(backbone, cohort, fit.mean, fit.std, dev, progress=progress)

    if not np.isfinite(embeddings).all():
        raise RuntimeError(f"CXR encoder {config.cxr_encoder} produced non-finite float16 embeddings")
    _warn_card(card, config.cxr_encoder)
    seconds = time.perf_counter() - t0
    subjects_hash = _subjects_hash(train_subjects)
    encoder_id = _encoder_id(config.cxr_encoder, size, fit.source, subjects_hash if fit.trained else "")
    attrs = _attrs(backbone.model_name, size, config, fit, train_images, train_subjects, subjects_hash, seconds,
                   backbone.num_features, seed)
    attrs.update(preset=config.cxr_encoder if preset is not None else "", device=dev.type, **card.attrs())
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
        card=card,
    )


def _own_backbone(
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
) -> tuple[CXRBackbone, "_Fit", EncoderCard]:
    """mmfair's own encoder: trained on the non-cohort images, or a seeded random network when they cannot
    train one (too few images, subjects or positives; or a time budget spent before the first step)."""
    reason = _fallback_reason(labels, subjects, names, seed)
    if reason is not None:
        logger.warning(
            "CXR encoder: %s; falling back to a random-init %s (seed %d). Its embeddings carry "
            "little information; recorded as random-init in the attrs",
            reason, config.cxr_encoder, seed,
        )
        backbone = build_cxr_backbone(config.cxr_encoder, None, config.encoder_image_size)
        fit = _Fit(
            source=f"random-init-seed{seed}", weights="random-init", mean=IMAGENET_GRAY_MEAN,
            std=IMAGENET_GRAY_STD, random_init=True, fallback_reason=reason,
            heldout_auroc={f: float("nan") for f in names},
        )
    else:
        if config.encoder_time_budget_s is not None:
            logger.warning(
                "CXR encoder: a %.0f s time budget is set, so how many steps train depends on the "
                "machine's speed and load: the weights, the embeddings and every score downstream then "
                "depend on the machine. Leave encoder_time_budget_s unset (the default stops after "
                "encoder_max_steps) for a reproducible encoder", config.encoder_time_budget_s,
            )
        data = _training_data(images, labels, subjects, names, config, dev, seed)
        backbone, fit = _EncoderTraining(data, config, dev, seed, t0, n_cohort, progress).run()
        if fit.steps == 0:
            logger.warning(
                "CXR encoder: the %.0f s time budget ran out before the first training step; the "
                "encoder is random-init (raise encoder_time_budget_s)", config.encoder_time_budget_s,
            )
            fit.random_init, fit.trained, fit.weights = True, False, "random-init"
            fit.source = f"random-init-seed{seed}"
            fit.fallback_reason = "time budget ran out before the first training step"
    card = (EncoderCard("none (random init)", "none") if fit.random_init
            else EncoderCard(OWN_CARD_TEXT, "non-cohort", "DESIGN §3.2"))
    return backbone, fit, card


def _load_external(config: PrepConfig, size: int) -> tuple[CXRBackbone, "_Fit", EncoderCard]:
    """A local weights file (timm or a preset's format), embed only; its card from the preset or the user."""
    backbone = build_cxr_backbone(config.cxr_encoder, config.cxr_weights, size)  # checks the file first
    weights_sha = file_sha256(config.cxr_weights)
    logger.info("CXR encoder: weights from %s (sha256 %s…), used as is, without fine-tuning", config.cxr_weights,
                weights_sha[:12])
    if config.cxr_encoder in CXR_PRESETS:
        preset = CXR_PRESETS.get(config.cxr_encoder)
        mean, std, card = preset.norm_mean, preset.norm_std, preset.card
    else:
        cfg = getattr(backbone.model, "pretrained_cfg", {}) or {}
        mean = float(np.mean(cfg.get("mean", (IMAGENET_GRAY_MEAN,))))
        std = float(np.mean(cfg.get("std", (IMAGENET_GRAY_STD,))))
        card = declared_card(config.cxr_pretraining)
    return backbone, _Fit(source=weights_sha, weights=weights_sha, mean=mean, std=std), card


def _warn_card(card: EncoderCard, model_name: str) -> None:
    if card.mimic_cxr == "yes":
        logger.warning("!!! CXR ENCODER PROVENANCE (%s): %s. Recorded in prep.json and the embedding attrs "
                       "(pretraining_mimic_cxr=yes); a report on these embeddings must say so !!!", model_name,
                       card.warning)
    elif card.warning:
        logger.warning("CXR encoder provenance (%s): %s", model_name, card.warning)


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


@dataclass
class _TrainingData:
    """The fit and held-out parts of the non-cohort images (resized uint8), U-Ignore targets and masks of the
    trainable findings, and the fit part's pixel statistics."""

    x_fit: torch.Tensor
    y_fit: torch.Tensor
    m_fit: torch.Tensor
    x_held: torch.Tensor
    y_held: np.ndarray
    m_held: np.ndarray
    names: list[str]  # every finding's (the held-out AUROC reports each, NaN when not trained)
    findings: list[str]  # the trainable ones
    mean: float
    std: float
    n_held_subjects: int


def _training_data(images: np.ndarray, labels: np.ndarray, subjects: np.ndarray, names: list[str],
                   config: PrepConfig, dev: torch.device, seed: int) -> _TrainingData:
    size = config.encoder_image_size
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
    n_held_subjects = len(np.unique(subjects[held_idx]))
    logger.info(
        "CXR encoder: training %s at %d px on %d images (%d subjects), holding out %d images (%d subjects); "
        "findings: %s",
        config.cxr_encoder, size, len(fit_idx), len(np.unique(subjects[fit_idx])), len(held_idx),
        n_held_subjects, ", ".join(used),
    )
    return _TrainingData(x_fit, y_fit, m_fit, x_held, target[held_idx], mask[held_idx], names, used, mean,
                         std, n_held_subjects)


class _EncoderTraining:
    """One training run of the encoder: a step-count loop (cosine LR over the planned steps, the last partial
    batch of an epoch dropped), a held-out evaluation after every epoch that keeps the best epoch's weights
    (the trainer's :class:`~mmfair.core.training.early_stopping.BestEpoch`, without patience: the step count
    stops training), and the optional time budget. Mixed precision is the trainer's."""

    def __init__(self, data: _TrainingData, config: PrepConfig, dev: torch.device, seed: int, t0: float,
                 n_cohort: int, progress: Progress | None) -> None:
        self.data, self.config, self.dev, self.seed, self.t0, self.progress = data, config, dev, seed, t0, progress
        self.backbone = build_cxr_backbone(config.cxr_encoder, None, config.encoder_image_size)
        head = nn.Linear(self.backbone.num_features, len(data.findings))
        self.net = nn.Sequential(self.backbone, head).to(dev, memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.amp = MixedPrecision(dev)
        self.gen = torch.Generator().manual_seed(seed)  # the augmentation
        self.rng = np.random.default_rng(seed)  # the batch order
        self.spec = CXRImageSpec(config.cxr_encoder, config.encoder_image_size, data.mean, data.std, **AUGMENT)
        self.n = len(data.x_fit)
        self.steps_per_epoch = max(1, self.n // BATCH_SIZE)  # the last partial batch is dropped: BatchNorm and speed
        self.total = min(config.encoder_max_steps, config.encoder_max_epochs * self.steps_per_epoch)
        self.budget = None
        if config.encoder_time_budget_s is not None:
            self.budget = _Budget(config.encoder_time_budget_s, t0, len(data.x_held), n_cohort,
                                  self.steps_per_epoch, self.total)
        self.best = BestEpoch()
        self.best_auroc: dict[str, float] = {}
        self.step, self.epoch, self.planned = 0, 0, self.total

    def run(self) -> tuple[CXRBackbone, _Fit]:
        """Train until the planned steps (or the budget) run out; the backbone at its best epoch."""
        evaluated_at = -1
        t_train = time.perf_counter()
        while self.step < self.planned:
            te = time.perf_counter()
            if not self._epoch():
                break
            self.epoch += 1
            self._evaluate(self.epoch)
            evaluated_at = self.step
            if self.budget is not None and self.epoch <= 2:  # epoch 2's time no longer includes warm-up
                self.planned = self.budget.plan(self.step, (time.perf_counter() - te) / self.steps_per_epoch)
        if self.step < self.total:  # only a time budget stops short of the planned steps
            logger.info("CXR encoder: stopped by the %.0f s time budget after %d steps", self.budget.seconds, self.step)
        if self.step != evaluated_at:
            self._evaluate(self.epoch + 1 if self.step else 0)
        return self._result(time.perf_counter() - t_train)

    def _epoch(self) -> bool:
        """One pass over a fresh permutation; False when the planned steps or the budget run out first."""
        data, budget = self.data, self.budget
        self.net.train()
        perm = torch.from_numpy(self.rng.permutation(self.n)).to(data.x_fit.device)
        for b in range(self.steps_per_epoch):
            if self.step >= self.planned or (budget is not None and budget.out_of_time(self.step)):
                return False
            tb = time.perf_counter()
            idx = perm[b * BATCH_SIZE : (b + 1) * BATCH_SIZE]
            x = augment_images(to_input(data.x_fit[idx], data.mean, data.std), self.spec, generator=self.gen)
            x = x.to(self.dev, non_blocking=True)
            _step(self.net, self.opt, self.amp, x, data.y_fit[idx].to(self.dev), data.m_fit[idx].to(self.dev),
                  _lr(self.step, self.planned))
            self.step += 1
            if budget is not None:
                self.planned = budget.stepped(self.step, time.perf_counter() - tb, self.epoch, self.planned)
            if self.progress is not None:
                self.progress("CXR encoder: training", self.step, self.planned)
        return True

    def _evaluate(self, epoch: int) -> None:
        data = self.data
        te = time.perf_counter()
        logits = _forward_all(self.net, data.x_held, data.mean, data.std, self.dev)
        if self.budget is not None:
            self.budget.evaluated(time.perf_counter() - te, len(data.x_held))
        auroc = _auroc_per_finding(data.y_held, data.m_held, logits, data.findings)
        vals = [v for v in auroc.values() if not math.isnan(v)]
        score = float(np.mean(vals)) if vals else -1.0  # an undefined score still beats "nothing kept"
        logger.info(
            "CXR encoder epoch %d: held-out mean AUROC %.3f (%s) [%.0f s]", epoch,
            score, ", ".join(f"{k} {v:.2f}" for k, v in auroc.items()), time.perf_counter() - self.t0,
        )
        if self.best.offer(score, epoch, lambda: copy.deepcopy(self.backbone.state_dict())):
            self.best_auroc = auroc

    def _result(self, train_s: float) -> tuple[CXRBackbone, _Fit]:
        data, config = self.data, self.config
        if self.best.state:
            self.backbone.load_state_dict(self.best.state)
        backbone = self.backbone.to(self.dev)
        return backbone, _Fit(
            source=_trained_source(config, self.seed), weights="trained-on-noncohort", mean=data.mean, std=data.std,
            trained=True, findings_trained=data.findings, n_fit_images=self.n, n_heldout_images=len(data.x_held),
            n_heldout_subjects=data.n_held_subjects,
            heldout_auroc={f: self.best_auroc.get(f, float("nan")) for f in data.names},
            best_epoch=self.best.epoch, epochs_run=round(self.step / self.steps_per_epoch, 3), steps=self.step,
            stopped_by=("time_budget" if self.step < self.total else
                        "max_steps" if self.total == config.encoder_max_steps else "max_epochs"),
            train_images_per_s=round(self.step * BATCH_SIZE / max(train_s, 1e-6), 1),
        )


def _step(net: nn.Module, opt: torch.optim.Optimizer, amp: MixedPrecision, x: torch.Tensor, y: torch.Tensor,
          m: torch.Tensor, lr: float) -> None:
    """One optimizer step of masked multi-label BCE (uncertain labels carry mask 0)."""
    for g in opt.param_groups:
        g["lr"] = lr
    with amp.autocast():
        logits = net(x)
    loss = (F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none") * m).sum()
    loss = loss / m.sum().clamp(min=1.0)
    opt.zero_grad(set_to_none=True)
    amp.backward(loss, opt)
    amp.step(opt)


def _trained_source(config: PrepConfig, seed: int) -> str:
    """What identifies trained weights in the encoder id: the seed and every setting that stops training."""
    budget = "" if config.encoder_time_budget_s is None else f"-budget{config.encoder_time_budget_s:g}s"
    return f"trained-on-noncohort-seed{seed}-steps{config.encoder_max_steps}-epochs{config.encoder_max_epochs}{budget}"


class _Budget:
    """The optional wall-clock cap (``encoder_time_budget_s``): it covers training, the held-out evaluations
    and embedding the cohort, so training stops with room left for one evaluation and the embedding, and
    the cosine is re-planned over the steps that fit so the LR has decayed when time runs out. How many
    steps fit depends on the machine: this is the non-reproducible mode, opt-in."""

    def __init__(self, seconds: float, t0: float, n_held: int, n_cohort: int, steps_per_epoch: int,
                 total: int) -> None:
        self.seconds, self.t0, self.n_held, self.n_cohort = seconds, t0, n_held, n_cohort
        self.steps_per_epoch, self.total = steps_per_epoch, total
        self.batch_s = 0.0
        self.eval_s: float | None = None
        self.embed_rate: float | None = None

    def reserve_s(self) -> float:
        # room for one held-out evaluation and for embedding the cohort afterwards, with a margin
        rate = self.embed_rate or (BATCH_SIZE / max(self.batch_s, 1e-6)) * 3.0
        return 1.25 * ((self.eval_s if self.eval_s is not None else self.n_held / rate) + self.n_cohort / rate) + 0.5

    def out_of_time(self, step: int) -> bool:
        elapsed = time.perf_counter() - self.t0
        # the reserve is estimated from the step time, which is not known until the warm-up steps are done:
        # a slow first step on a busy machine would otherwise stop training after one step
        return elapsed > self.seconds or (step > WARMUP_STEPS and elapsed + self.reserve_s() > self.seconds)

    def evaluated(self, seconds: float, n: int) -> None:
        self.eval_s, self.embed_rate = seconds, n / max(seconds, 1e-6)

    def stepped(self, step: int, seconds: float, epoch: int, planned: int) -> int:
        self.batch_s = 0.8 * self.batch_s + 0.2 * seconds if step > WARMUP_STEPS else seconds
        if step == 10 and epoch == 0:  # a first guess, before an epoch has been timed
            return self.plan(step, self.batch_s * (1.0 + 3.0 / self.steps_per_epoch))
        return planned

    def plan(self, step: int, step_s: float) -> int:
        """Total steps that fit the budget at ``step_s`` seconds a step, at most the configured total."""
        left = self.seconds - (time.perf_counter() - self.t0) - self.reserve_s()
        return int(min(self.total, max(step + 1, step + math.floor(left / max(step_s, 1e-9)))))


def _lr(step: int, total: int) -> float:
    warm = min(1.0, (step + 1) / WARMUP_STEPS)
    progress = min(1.0, step / max(1, total))
    return LR * warm * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


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
    outs = []
    for i in range(0, len(images), EMBED_BATCH):
        x = to_input(images[i : i + EMBED_BATCH], mean, std).to(dev, non_blocking=True)
        with autocast(dev):
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


@contextmanager
def _reproducible(seed: int, dev: torch.device, threads: int) -> Iterator[None]:
    """Seeded, deterministic kernels and (on CPU) a fixed thread count inside the block; restored after.

    The global RNGs are forked, so seeding here does not change the caller's random stream. On CPU,
    torch's deterministic algorithms are switched on; a float sum can depend on how it is split across
    threads, so the thread count is part of the result (``threads``, 0 = the cores this process may use).
    On CUDA, cuDNN is made deterministic, but some backward kernels stay nondeterministic.
    """
    devices = [dev.index or 0] if dev.type == "cuda" else []
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    pinned = cpu_threads(threads or _cores()) if dev.type == "cpu" else nullcontext()
    with pinned, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if dev.type == "cpu":
            torch.use_deterministic_algorithms(True)
        else:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
        "time_budget_s": float(config.encoder_time_budget_s or 0.0),  # 0: none, the reproducible default
        "max_steps": int(config.encoder_max_steps),
        "threads": int(config.encoder_threads),
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
