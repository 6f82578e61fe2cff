"""``smil``: SMIL — an absent CXR feature reconstructed from learned weights over k-means priors of the
training CXRs, an uncertainty-guided (Bayesian) feature perturbation, and a meta-learning step.

Paper: Ma et al. (M. Ma, J. Ren, L. Zhao, S. Tulyakov, C. Wu, X. Peng), "SMIL: Multimodal Learning with
Severely Missing Modality", AAAI 2021 (arXiv 2103.05677).

Mechanism as implemented:
* **modality priors**: ``prepare`` runs k-means (k-means++ start, seeded, Lloyd iterations) on the CXR
  embeddings of the TRAINING split's stays that have a CXR and stores the K centres (``n_priors``, 10 as in
  the paper) in the buffer ``priors`` [K, D]; with fewer distinct images than K, every image is a centre
  and the unused slots are masked out (``prior_valid``);
* **missing-modality reconstruction**: a network on the EHR feature predicts weights w = softmax(φ_c(h_ehr))
  over the valid priors; the reconstructed CXR embedding x̂ = Σ_k w_k c_k goes through the same CXR encoder
  as a real one. **An absent CXR is replaced by this reconstruction, per stay, in training AND at
  evaluation** (CareBench, carebench.md §3 item 17, used it only in meta-train mode and fed a zeros image at
  validation/test);
* **uncertainty-guided feature regularisation** (Bayesian): a network on the joint feature f predicts a
  Gaussian N(μ, σ²) over a perturbation r; the perturbed feature is f ⊙ softplus(r) (multiplicative, as in
  Meta-Dropout, on which SMIL builds). In training ``mc_size`` Monte-Carlo samples of r are drawn and the
  meta-train loss is their mean (CareBench tuned ``mc_size`` but never used it); at evaluation r = μ, so a
  prediction is deterministic. A KL(N(μ, σ²) ‖ N(0, I)) term (``kl_weight``) keeps the posterior close to
  its prior;
* **meta-learning** (in ``training_loss``, where the labels are): the batch is split at random into
  meta-train (80 %) and meta-val (``meta_val_fraction``) stays. Inner loop: ``inner_steps`` SGD steps of
  size ``inner_lr`` on the classifier head θ with the Monte-Carlo-perturbed meta-train loss, kept in the
  graph (second order through the head); outer loss = meta-train loss(θ) + meta-val loss(θ′) with the
  deterministic feature, so the reconstruction and regularisation networks are trained by how well the
  adapted head generalises, as in the paper's bi-level objective. One optimiser step then updates all
  parameters (encoders, reconstruction/regularisation networks, head) on the outer loss;
* **distillation/feature terms** (aux losses; not in the SMIL paper, kept from CareBench's adaptation
  with its hyperparameters): ``feature`` = α·MSE between the encoded reconstruction and the encoded real
  CXR (target detached) on stays with a CXR; ``distill`` = β·τ²·KD between the prediction made with the
  reconstruction (student) and the one made with the real CXR (teacher, detached) at temperature τ.

Absent CXR: replaced per stay by its reconstruction (``torch.where`` on ``present``, so the placeholder
is never read). Before ``prepare`` has run (or if the training split has no CXR) no prior is valid and the
reconstruction is the zero embedding (the standardised embeddings' mean), so the model still works.

Deviations:
* input mode: cached CXR embeddings from a frozen timm backbone (LayerNorm → Linear → ReLU on the
  embedding) instead of an image CNN trained end to end; the priors are k-means centres of those
  embeddings (the paper clusters the missing modality's features); EHR by the configured EHR encoder;
* the inner loop adapts only the classifier head (Linear(H, K)), not the whole main network: a
  second-order inner step through the encoders would multiply the cost; the encoders, the reconstruction
  and regularisation networks get their gradients from the outer loss (first order for the encoders);
* the meta-train/meta-val split is within each batch (no episodes/tasks), as in CareBench's adaptation;
  the outer loss adds the meta-train loss at θ to the meta-val loss at θ′ (MAML's outer loss is the
  meta-val term alone), so every stay of the batch is fitted once; a batch too small to split (or
  ``inner_steps`` = 0) gets the Monte-Carlo loss on all its stays;
* the perturbation is applied to the joint feature only (the paper perturbs the latent features of the
  main network); eval uses r = μ rather than sampling;
* the feature and distillation terms are additions (CareBench's), with weights α = β = 0.1, τ = 2;
* sizes: H = 64, K = 10 priors, ``mc_size`` = 10, one inner step of 1e-3 (CareBench's search ranges:
  T_inner ∈ {1, 2, 3}, η_inner ∈ [1e-4, 1e-3], α, β ∈ [0.05, 0.2], τ ∈ [1, 3]); no tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder, keep_present
from mmfair.core.registry import FUSIONS


def kmeans(points: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """Centres of ``points`` [N, D] (float64): k-means++ start from a seeded generator, then Lloyd
    iterations until the assignment stops changing. Requires N ≥ k distinct points for k centres; an
    emptied cluster is re-seeded with the point farthest from its centre."""
    generator = torch.Generator().manual_seed(seed)
    n = points.shape[0]
    centres = [points[torch.randint(n, (1,), generator=generator)].squeeze(0)]
    closest = ((points - centres[0]) ** 2).sum(dim=1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point already coincides with a centre
            break
        choice = torch.multinomial(closest / total, 1, generator=generator)
        centres.append(points[choice].squeeze(0))
        closest = torch.minimum(closest, ((points - centres[-1]) ** 2).sum(dim=1))
    centres_t = torch.stack(centres)
    assignment = None
    for _ in range(iterations):
        distances = torch.cdist(points, centres_t)
        new_assignment = distances.argmin(dim=1)
        if assignment is not None and torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for j in range(centres_t.shape[0]):
            members = assignment == j
            if members.any():
                centres_t[j] = points[members].mean(dim=0)
            else:
                centres_t[j] = points[distances.min(dim=1).values.argmax()]
    return centres_t


@dataclass
class SMILOutput(Output):
    """An :class:`Output` that also carries, from a training-mode forward, the features the meta-learning
    loss needs (kept on the output, not on the model, so nothing stale outlives the step)."""

    perturbed: torch.Tensor | None = None  # f ⊙ softplus(r_s) [S, B, H], one per Monte-Carlo sample
    deterministic: torch.Tensor | None = None  # f ⊙ softplus(μ) [B, H]


@FUSIONS.register(
    "smil",
    summary="SMIL: absent CXR reconstructed from k-means priors weighted from the EHR, Bayesian feature "
    "perturbation, meta-learned head",
    paper="Ma et al. 2021 (AAAI, arXiv 2103.05677)",
)
class SMIL(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True

    class Params(FusionParams):
        n_priors: int = Field(10, ge=1, le=256, description="k-means centres of the training CXR embeddings")
        kmeans_iterations: int = Field(100, ge=1, le=1000, description="at most this many Lloyd iterations")
        kmeans_seed: int = Field(0, ge=0, description="seed of the k-means++ start")
        mc_size: int = Field(10, ge=1, le=64, description="Monte-Carlo samples of the feature perturbation")
        inner_steps: int = Field(1, ge=0, le=3, description="inner SGD steps on the head (0: no meta-learning)")
        inner_lr: float = Field(1e-3, gt=0.0, le=1.0, description="inner-loop step size")
        meta_val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of a batch held out as meta-val")
        kl_weight: float = Field(1e-3, ge=0.0, le=1.0, description="weight of KL(N(μ, σ²) ‖ N(0, I))")
        feature_weight: float = Field(0.1, ge=0.0, le=1.0, description="α: reconstruction-vs-real feature MSE")
        distill_weight: float = Field(0.1, ge=0.0, le=1.0, description="β: KD from the real-CXR prediction")
        temperature: float = Field(2.0, ge=1.0, le=5.0, description="τ of the distillation")

    # the tuning search space (mmfair study): Params field -> ("log"|"float"|"int", low, high) or ("choice", [values])
    search_space = {"inner_steps": ("int", 1, 3), "inner_lr": ("log", 1e-4, 1e-3), "feature_weight": ("float", 0.05, 0.2),
                    "distill_weight": ("float", 0.05, 0.2), "temperature": ("float", 1.0, 3.0)}  # CareBench's ranges

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        dim, k = spec.hidden_dim, self.params.n_priors
        self.fusion = nn.ModuleDict({
            "reconstruction": nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, k)),
            "joint": nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Dropout(spec.dropout)),
            "regulariser": nn.Linear(dim, 2 * dim),
        })
        self.head = nn.Linear(dim, spec.n_outputs)
        self.register_buffer("priors", torch.zeros(k, max(spec.cxr_dim, 1)))
        self.register_buffer("prior_valid", torch.zeros(k, dtype=torch.bool))

    @torch.no_grad()
    def prepare(self, train) -> None:
        """k-means priors of the training split's CXR embeddings (stays with a CXR only)."""
        present = train.present["cxr"].bool()
        images = train.inputs["cxr"][present].detach().to("cpu", torch.float64)
        distinct = torch.unique(images, dim=0) if len(images) else images
        k = min(self.params.n_priors, len(distinct))
        self.priors.zero_()
        self.prior_valid.zero_()
        if k == 0:
            return
        centres = distinct if k == len(distinct) else kmeans(images, k, self.params.kmeans_iterations, self.params.kmeans_seed)
        self.priors[: len(centres)] = centres.to(self.priors)
        self.prior_valid[: len(centres)] = True

    # ---- forward ------------------------------------------------------------------------------
    def reconstruct(self, ehr_feature: torch.Tensor) -> torch.Tensor:
        """x̂ = Σ_k w_k c_k with w = softmax over the valid priors; zeros when no prior is valid."""
        if not bool(self.prior_valid.any()):
            return ehr_feature.new_zeros(ehr_feature.shape[0], self.priors.shape[1])
        scores = self.fusion["reconstruction"](ehr_feature)
        scores = scores.masked_fill(~self.prior_valid, float("-inf"))
        return torch.softmax(scores, dim=1) @ self.priors

    def _perturbation(self, joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.fusion["regulariser"](joint).chunk(2, dim=1)
        return mean, log_var.clamp(-8.0, 8.0)

    def _classify(self, joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_var = self._perturbation(joint)
        deterministic = joint * F.softplus(mean)
        return self.head(deterministic), mean, log_var

    def forward(self, batch: Batch) -> Output:
        present = batch["present"]["cxr"].bool()
        ehr_feature = self.encoders["ehr"](batch["inputs"]["ehr"])
        real_cxr = keep_present(self.encoders["cxr"](batch["inputs"]["cxr"]), present)
        reconstructed_cxr = self.encoders["cxr"](self.reconstruct(ehr_feature))
        cxr_feature = torch.where(present[:, None], real_cxr, reconstructed_cxr)
        joint = self.fusion["joint"](torch.cat([ehr_feature, cxr_feature], dim=1))
        logits, mean, log_var = self._classify(joint)

        aux = {"kl": self.params.kl_weight * 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(dim=1).mean()}
        aux["feature"] = self.params.feature_weight * self._masked_mean(
            (reconstructed_cxr - real_cxr.detach()).pow(2).mean(dim=1), present)
        student_joint = self.fusion["joint"](torch.cat([ehr_feature, reconstructed_cxr], dim=1))
        student_logits, _, _ = self._classify(student_joint)
        aux["distill"] = self.params.distill_weight * self._masked_mean(
            self._distillation(student_logits, logits.detach()), present)

        embeddings = {"ehr": ehr_feature, "cxr": cxr_feature}
        if not self.training:
            return SMILOutput(logits=logits, embeddings=embeddings, aux_losses=aux)
        samples = mean + torch.exp(0.5 * log_var) * torch.randn(
            (self.params.mc_size, *mean.shape), dtype=mean.dtype, device=mean.device)
        return SMILOutput(logits=logits, embeddings=embeddings, aux_losses=aux,
                          perturbed=joint * F.softplus(samples), deterministic=joint * F.softplus(mean))

    def _distillation(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Per-stay KD at temperature τ, scaled by τ² (Hinton et al.)."""
        tau = self.params.temperature
        if self.spec.output_kind == "softmax":
            per_row = F.kl_div(F.log_softmax(student / tau, dim=1), F.log_softmax(teacher / tau, dim=1),
                               reduction="none", log_target=True).sum(dim=1)
        else:
            per_row = F.binary_cross_entropy_with_logits(student / tau, torch.sigmoid(teacher / tau),
                                                         reduction="none").mean(dim=1)
            per_row = per_row - F.binary_cross_entropy_with_logits(teacher / tau, torch.sigmoid(teacher / tau),
                                                                   reduction="none").mean(dim=1)
        return tau**2 * per_row

    @staticmethod
    def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        values = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))
        return values.sum() / keep.sum().clamp_min(1).to(values.dtype)

    # ---- loss ---------------------------------------------------------------------------------
    def training_loss(self, output: Output, batch: Batch, task) -> torch.Tensor:
        """Meta-train loss (Monte-Carlo mean, head θ) + meta-val loss (head θ′ after the inner steps) + aux.

        Falls back to the base loss for an evaluation-mode output or when gradients are off (a
        validation loss)."""
        state = output if isinstance(output, SMILOutput) and output.perturbed is not None else None
        if state is None or not torch.is_grad_enabled() or not self.head.weight.requires_grad:
            return super().training_loss(output, batch, task)
        labels, scorable = batch["labels"], self.scorable(batch["present"])
        rows = labels.shape[0]
        n_val = int(round(self.params.meta_val_fraction * rows))
        weight, bias = self.head.weight, self.head.bias

        def mc_loss(features: torch.Tensor, index: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            losses = [task.loss(F.linear(sample[index], w, b), labels[index], scorable[index]) for sample in features]
            return torch.stack(losses).mean()

        if self.params.inner_steps == 0 or n_val < 1 or n_val >= rows:
            loss = mc_loss(state.perturbed, torch.arange(rows, device=labels.device), weight, bias)
        else:
            order = torch.randperm(rows, device=labels.device)
            meta_val, meta_train = order[:n_val], order[n_val:]
            loss = mc_loss(state.perturbed, meta_train, weight, bias)
            adapted_w, adapted_b, inner = weight, bias, loss
            for step in range(self.params.inner_steps):
                if step > 0:
                    inner = mc_loss(state.perturbed, meta_train, adapted_w, adapted_b)
                grad_w, grad_b = torch.autograd.grad(inner, (adapted_w, adapted_b), create_graph=True)
                adapted_w = adapted_w - self.params.inner_lr * grad_w
                adapted_b = adapted_b - self.params.inner_lr * grad_b
            val_logits = F.linear(state.deterministic[meta_val], adapted_w, adapted_b)
            loss = loss + task.loss(val_logits, labels[meta_val], scorable[meta_val])
        for aux in output.aux_losses.values():
            loss = loss + aux
        return loss
