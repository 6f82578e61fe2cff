"""Prediction tasks (registry ``TASKS``): which cohort columns are labels, the loss, the outputs.

A task is resolved against the columns of ``cohort.csv`` (phenotype slugs come from the cohort, in its
column order). Kinds: ``binary`` (one sigmoid output), ``multilabel`` (one sigmoid output per label,
e.g. the 25 phenotypes) and ``multiclass`` (softmax over ordered classes: ``los``, 7 classes of
``los_class``; metrics accuracy, macro-F1, linear-weighted Cohen's kappa — the selection criterion — and
macro one-vs-rest AUROC).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.metrics import cohen_kappa_score

from mmfair.core.errors import InputFileError
from mmfair.core.registry import TASKS

TaskKind = Literal["binary", "multilabel", "multiclass"]


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Rank-based AUROC (Mann-Whitney, ties averaged): equals sklearn's roc_auc_score, much faster."""
    y = np.asarray(y) > 0.5
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision as sklearn computes it (step-wise, one point per distinct score)."""
    y = np.asarray(y) > 0.5
    if not y.any():
        return float("nan")
    order = np.argsort(-np.asarray(score), kind="mergesort")
    y_sorted, s_sorted = y[order], np.asarray(score)[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1]
    tps = np.cumsum(y_sorted)[last_of_value]
    precision = tps / (last_of_value + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes seen in ``y`` or ``pred`` (sklearn's ``f1_score(average="macro")``);
    per class 2·TP / (2·TP + FP + FN), which is never 0/0 for a class that occurs. No warnings."""
    classes = np.union1d(y, pred)
    if classes.size == 0:
        return float("nan")
    scores = []
    for k in classes:
        tp = np.sum((y == k) & (pred == k))
        fp = np.sum((y != k) & (pred == k))
        fn = np.sum((y == k) & (pred != k))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def multiclass_metrics(y: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, float]:
    """Metrics of an ordered multiclass task (LOS) from labels [N] and class probabilities [N, K].

    ``accuracy`` and ``macro_f1`` of the arg-max class; ``kappa``: Cohen's kappa with linear weights over
    the class *indices* 0…K−1 (``labels=range(K)``, so an unseen class still counts in the distance);
    ``auroc``: macro one-vs-rest AUROC over the classes that have both positives and negatives in ``y``
    (sklearn's ``roc_auc_score(multi_class="ovr")`` when every class occurs); ``auprc`` is not defined
    for this task (NaN); ``selection`` = kappa. NaN when there are no rows (kappa: when labels and
    predictions all fall in one class)."""
    nan = float("nan")
    if y.size == 0:
        return {"accuracy": nan, "macro_f1": nan, "kappa": nan, "auroc": nan, "auprc": nan, "selection": nan}
    pred = probs.argmax(axis=1)
    if np.union1d(y, pred).size > 1:
        kappa = float(cohen_kappa_score(y, pred, labels=np.arange(n_classes), weights="linear"))
    else:
        kappa = nan
    per_class = [auroc(y == k, probs[:, k]) for k in range(probs.shape[1]) if 0 < np.sum(y == k) < y.size]
    return {
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": macro_f1(y, pred),
        "kappa": kappa,
        "auroc": float(np.mean(per_class)) if per_class else nan,
        "auprc": nan,
        "selection": kappa,
    }


@dataclass(frozen=True)
class Task:
    """A task definition. ``column`` for binary/multiclass, ``column_prefix`` for multilabel."""

    name: str
    kind: TaskKind
    column: str | None = None
    column_prefix: str | None = None
    n_classes: int = 2
    #: ``train --class-weights balanced``: per label the positive weight n_neg/n_pos (binary, multilabel), or
    #: per class n/(K·n_c) (multiclass), from the training rows; None = unweighted
    class_weights: tuple[float, ...] | None = None

    # ---- labels -------------------------------------------------------------------------------
    def label_columns(self, columns: Sequence[str]) -> list[str]:
        """The cohort columns holding the labels, in cohort order."""
        if self.kind == "multilabel":
            found = [c for c in columns if c.startswith(self.column_prefix or "")]
            if not found:
                raise InputFileError(f"cohort.csv: task '{self.name}' needs columns '{self.column_prefix}*', none found")
            return found
        if self.column not in columns:
            raise InputFileError(f"cohort.csv: task '{self.name}' needs column '{self.column}', not found")
        return [self.column]

    def label_names(self, columns: Sequence[str]) -> list[str]:
        """Names used in ``threshold.json`` and the tidy tables: ``all`` or the phenotype slugs."""
        if self.kind == "multilabel":
            return [c[len(self.column_prefix or ""):] for c in self.label_columns(columns)]
        return ["all"]

    def n_outputs(self, columns: Sequence[str]) -> int:
        if self.kind == "multilabel":
            return len(self.label_columns(columns))
        if self.kind == "multiclass":
            return self.n_classes
        return 1

    def label_tensor(self, cohort: pd.DataFrame) -> torch.Tensor:
        """Labels for every cohort row: float [N, L] (binary/multilabel) or long [N] (multiclass)."""
        cols = self.label_columns(list(cohort.columns))
        values = np.array(cohort[cols].to_numpy(dtype=float), copy=True)
        if np.isnan(values).any():
            bad = cols[int(np.argwhere(np.isnan(values))[0, 1])]
            raise InputFileError(f"cohort.csv: column '{bad}' has empty labels; task '{self.name}' needs every stay labelled")
        if self.kind == "multiclass":
            return torch.as_tensor(values[:, 0], dtype=torch.long)
        return torch.as_tensor(values, dtype=torch.float32)

    # ---- model outputs ------------------------------------------------------------------------
    @property
    def output_kind(self) -> Literal["sigmoid", "softmax"]:
        return "softmax" if self.kind == "multiclass" else "sigmoid"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over the rows where the bool mask ``weight`` is set (all rows when None); 0 when no
        row counts. Rows outside the mask are selected out, so their logits may even be NaN."""
        per_row = self.per_row_loss(logits, labels)
        if weight is None:
            return per_row.mean()
        keep = weight.bool()
        per_row = torch.where(keep, per_row, torch.zeros((), dtype=per_row.dtype, device=per_row.device))
        return per_row.sum() / keep.sum().clamp_min(1).to(per_row.dtype)

    def per_row_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of each row, unreduced: cross-entropy (multiclass) or the mean BCE over labels, with the
        class weights when set."""
        logits = logits.float()
        weights = None if self.class_weights is None else torch.tensor(self.class_weights, device=logits.device)
        if self.kind == "multiclass":
            return F.cross_entropy(logits, labels, weight=weights, reduction="none")
        return F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=weights, reduction="none").mean(dim=1)

    def balanced(self, labels: torch.Tensor) -> "Task":
        """This task with balanced class weights computed from ``labels`` (the training rows)."""
        y = labels.detach().cpu().double()
        if self.kind == "multiclass":
            counts = torch.bincount(y.long(), minlength=self.n_classes).double()
            weights = torch.where(counts > 0, y.numel() / (self.n_classes * counts.clamp_min(1)), torch.ones_like(counts))
        else:
            y = y.reshape(len(y), -1)
            positives = y.sum(dim=0)
            weights = torch.where(positives > 0, (len(y) - positives) / positives.clamp_min(1), torch.ones_like(positives))
        return replace(self, class_weights=tuple(float(w) for w in weights))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.softmax(logits, dim=1) if self.kind == "multiclass" else torch.sigmoid(logits)

    # ---- predictions table --------------------------------------------------------------------
    def prediction_frame(self, labels: np.ndarray, probs: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        """``label``/``score`` (binary), ``label_<slug>``/``score_<slug>`` (multilabel) or
        ``label``/``score_0``… (multiclass). NaN probabilities become empty scores."""
        out: dict[str, np.ndarray] = {}
        if self.kind == "binary":
            out["label"] = labels.reshape(-1).astype(np.int64)
            out["score"] = probs.reshape(-1).astype(np.float64)
        elif self.kind == "multilabel":
            for j, slug in enumerate(self.label_names(columns)):
                out[f"label_{slug}"] = labels[:, j].astype(np.int64)
                out[f"score_{slug}"] = probs[:, j].astype(np.float64)
        else:
            out["label"] = labels.reshape(-1).astype(np.int64)
            for k in range(probs.shape[1]):
                out[f"score_{k}"] = probs[:, k].astype(np.float64)
        return pd.DataFrame(out)

    # ---- validation metrics -------------------------------------------------------------------
    def metrics(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """``auroc``, ``auprc`` (macro over labels with both classes) and ``selection`` (the early
        stopping criterion: AUPRC). Multiclass: see :func:`multiclass_metrics` (selection = linear-weighted
        kappa). Rows with NaN scores are ignored."""
        if self.kind == "multiclass":
            keep = ~np.isnan(probs).any(axis=1)
            return multiclass_metrics(labels.reshape(-1)[keep].astype(np.int64), probs[keep], self.n_classes)
        labels = labels.reshape(len(labels), -1)
        probs = probs.reshape(len(probs), -1)
        aurocs, auprcs = [], []
        for j in range(labels.shape[1]):
            keep = ~np.isnan(probs[:, j])
            y, p = labels[keep, j], probs[keep, j]
            if np.unique(y).size < 2:
                continue
            aurocs.append(auroc(y, p))
            auprcs.append(average_precision(y, p))
        macro_auroc = float(np.mean(aurocs)) if aurocs else float("nan")
        macro_auprc = float(np.mean(auprcs)) if auprcs else float("nan")
        return {"auroc": macro_auroc, "auprc": macro_auprc, "selection": macro_auprc}


def get_task(name: str) -> Task:
    return TASKS.get(name)


TASKS.register("mortality", summary="in-hospital mortality (admissions.hospital_expire_flag)")(
    Task("mortality", "binary", column="mortality")
)
TASKS.register("mortality_icu", summary="ICU mortality (deathtime <= outtime + 6 h)")(
    Task("mortality_icu", "binary", column="mortality_icu")
)
TASKS.register("phenotype", summary="25 CCS phenotypes of the admission, from the first 48 h (multilabel)")(
    Task("phenotype", "multilabel", column_prefix="pheno_")
)
TASKS.register("los", summary="length of stay, 7 classes of los_class (multiclass; selection on linear kappa)")(
    Task("los", "multiclass", column="los_class", n_classes=7)
)
