"""``m3care``: M3Care — the absent CXR representation imputed from similar patients of a fixed bank of
training stays, mixed with the observed features by learned gates, then an MLP.

Paper: Zhang et al. (C. Zhang, X. Chu, L. Ma, Y. Zhu, Y. Wang, J. Wang, J. Zhao), "M3Care: Learning
with Missing Modalities in Multimodal Healthcare Data", KDD 2022 (arXiv 2210.17292).

Mechanism as implemented:
* unimodal encoders give h_ehr and h_cxr (H = ``hidden_dim``);
* **patient similarity** per modality: a multi-bandwidth Gaussian kernel on a learned projection
  φ_m(h) = ReLU(W_m h), averaged over the ``kernel_count`` bandwidths b·mul^k (k centred on 0), where b is
  the mean squared pairwise distance of the projected **bank** features (detached); the similarity of two
  stays is the mean of the kernels of the modalities *both* have (a stay without a CXR is compared on
  the EHR only), and it is **thresholded by a learned value** ε = σ(θ_ε): A = ReLU(S − ε);
* **imputation by graph convolution** over a FIXED BANK of training stays that have a CXR (see below):
  layer 1 propagates the bank's features over the bank–bank graph (mean aggregation with the self loop),
  layer 2 propagates those to each stay over its stay → bank edges: g_m = ReLU(W₂ Â_q (ReLU(W₁ Â_bank h_bank))).
  Both modalities get a graph feature, as in the paper;
* **adaptive mixing**: where modality m is observed and the stay has neighbours, h̄_m = α ⊙ h_m + (1 − α) ⊙ g_m
  with α = σ(W_g[h_m ‖ g_m]); an **absent CXR is replaced by its imputation g_cxr** (per stay); without
  any neighbour above the threshold the graph feature is unavailable and h̄_m = h_m (an absent CXR with no
  neighbour is then exact zeros);
* the joined vector [h̄_ehr ‖ h̄_cxr] goes through an MLP (Linear(2H, H) → ReLU → Dropout) and a linear head;
* **stability regulariser** (aux loss ``stability``): λ·mean |‖φ_m(h)‖ − ‖h‖| over the observed features of
  each modality (``stability_weight``).

The bank (the point of this implementation): CareBench (carebench.md §3 item 15) builds the similarity
graph **within the batch** (batch size 16), so a test prediction depends on which other test stays share
its batch. Here ``prepare`` stores a seeded sample of up to ``bank_size`` training stays WITH a CXR as
buffers — their raw inputs (EHR [bank, T, 2F], CXR [bank, D]) — and every forward re-encodes them with
the current weights. Raw inputs rather than cached features because there is no per-epoch hook: stored
features would be stale as the encoders train, and raw inputs keep the bank consistent with the weights
the checkpoint holds (cost: one encoder pass over the bank per forward). Neighbours come only from the
bank, so a stay's prediction never depends on the other stays of its batch, in training or at evaluation.
A stay is never its own neighbour: bank rows whose EHR fingerprint matches the stay's are excluded (always,
so training mimics evaluation and a training stay scored later gets the same rule).
Before ``prepare`` has run (or with a training split without any CXR) the bank is empty: no stay has a
neighbour, the gates are bypassed and the model is an early-fusion MLP on h_ehr and the observed h_cxr.

Deviations:
* input mode: cached CXR embeddings from a frozen timm backbone (LayerNorm → Linear → ReLU on the
  embedding) instead of an image CNN fine-tuned end to end; EHR by the configured EHR encoder; H = 64;
* the graph is stay → fixed bank (bipartite, two hops via the bank–bank graph), not the paper's graph
  over the batch; neighbours of a stay without a CXR are compared on the EHR kernel only;
* the kernel bandwidth comes from the bank's pairwise distances (the original code uses the batch's,
  a batch statistic we must not use at evaluation); the kernels are averaged rather than summed so that
  the similarity lies in (0, 1] and the learned threshold has a fixed scale;
* the threshold is soft (ReLU(S − ε), so ε receives a gradient) and adjacency rows are normalised to
  sum 1 (mean aggregation) rather than the symmetric GCN normalisation;
* the paper's multimodal transformer over the modality tokens is replaced by the MLP on the joined vector;
* at evaluation, batches smaller than 16 stays are padded with copies of their first stay (and cut
  back): BLAS picks another kernel for 1-4 rows whose rounding differs, which would make a stay's score
  depend (in the last bit) on its batch size;
* sizes: bank 256 stays, 3 bandwidths (multiplier 2), λ = 0.1; no tuning.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from mmfair.core.fusion._base import Batch, FusionModel, FusionParams, FusionSpec, Output, build_modality_encoder, keep_present
from mmfair.core.registry import FUSIONS

# At evaluation, batches are padded to this many rows (see the module docstring).
MIN_EVAL_ROWS = 16
# Seed of the fixed random weights that fingerprint a stay's EHR (for "is this stay in the bank?").
FINGERPRINT_SEED = 20221031


def _pairwise_sq_distances(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[Q, K] squared Euclidean distances ‖q‖² + ‖k‖² − 2 q·k (a matrix product: the elementwise form
    costs ~40 % of a training step), clamped at 0 against cancellation."""
    # float32 even under autocast: in bfloat16 the cancellation would swamp the distances of close neighbours
    with torch.autocast(device_type=queries.device.type, enabled=False):
        queries, keys = queries.float(), keys.float()
        cross = queries @ keys.T
        return (queries.pow(2).sum(dim=1)[:, None] + keys.pow(2).sum(dim=1)[None, :] - 2 * cross).clamp_min(0.0)


def _row_normalise(adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows scaled to sum 1, and whether each row had any weight (all-zero rows stay zero)."""
    total = adjacency.sum(dim=1, keepdim=True)
    has_any = total > 0
    safe = torch.where(has_any, total, torch.ones((), dtype=total.dtype, device=total.device))
    return adjacency / safe, has_any[:, 0]


class _ModalitySimilarityGraph(nn.Module):
    """One modality's similarity projection φ, its two graph-convolution layers and its mixing gate."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.bank_layer = nn.Linear(dim, dim)
        self.query_layer = nn.Linear(dim, dim)
        self.gate = nn.Linear(2 * dim, dim)


@FUSIONS.register(
    "m3care",
    summary="M3Care: absent CXR imputed by a graph over a fixed bank of similar training stays, gated mixing, MLP",
    paper="Zhang et al. 2022 (KDD, arXiv 2210.17292)",
)
class M3Care(FusionModel):
    modalities = ("ehr", "cxr")
    handles_missing = True

    class Params(FusionParams):
        bank_size: int = Field(256, ge=1, le=4096, description="training stays with a CXR kept as neighbours")
        bank_seed: int = Field(0, ge=0, description="seed of the bank's sample of training stays")
        stability_weight: float = Field(0.1, ge=0.0, le=2.0, description="λ of the stability regulariser")
        kernel_count: int = Field(3, ge=1, le=7, description="Gaussian kernel bandwidths averaged")
        kernel_multiplier: float = Field(2.0, gt=1.0, le=4.0, description="ratio between successive bandwidths")
        initial_threshold: float = Field(0.1, gt=0.0, lt=1.0, description="similarity threshold ε at initialisation")

    # the tuning search space (mmfair study): Params field -> ("log"|"float"|"int", low, high) or ("choice", [values])
    search_space = {"stability_weight": ("log", 0.001, 2.0)}

    def __init__(self, spec: FusionSpec, params: FusionParams | None = None) -> None:
        super().__init__(spec, params)
        self.encoders = nn.ModuleDict({m: build_modality_encoder(m, spec) for m in self.modalities})
        dim = spec.hidden_dim
        initial = torch.tensor(self.params.initial_threshold)
        self.fusion = nn.ModuleDict({
            "graphs": nn.ModuleDict({m: _ModalitySimilarityGraph(dim) for m in self.modalities}),
            "mlp": nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Dropout(spec.dropout)),
        })
        self.fusion.threshold_logit = nn.Parameter(torch.log(initial) - torch.log1p(-initial))
        self.head = nn.Linear(dim, spec.n_outputs)

        size = self.params.bank_size
        self.register_buffer("bank_ehr", torch.zeros(size, spec.seq_len, 2 * spec.n_features))
        self.register_buffer("bank_cxr", torch.zeros(size, max(spec.cxr_dim, 1)))
        self.register_buffer("bank_fingerprint", torch.full((size,), float("nan"), dtype=torch.float64))
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long))
        generator = torch.Generator().manual_seed(FINGERPRINT_SEED)
        weights = torch.rand(spec.seq_len * 2 * spec.n_features, generator=generator, dtype=torch.float64) + 0.5
        self.register_buffer("fingerprint_weights", weights, persistent=False)

    # ---- the bank -----------------------------------------------------------------------------
    def _fingerprint(self, ehr: torch.Tensor) -> torch.Tensor:
        flat = ehr.reshape(ehr.shape[0], -1).to(torch.float64)
        return (flat * self.fingerprint_weights[: flat.shape[1]]).sum(dim=1)

    @torch.no_grad()
    def prepare(self, train) -> None:
        """Fill the bank with a seeded sample of up to ``bank_size`` training stays that have a CXR."""
        with_cxr = torch.nonzero(train.present["cxr"].bool().cpu(), as_tuple=False)[:, 0]
        generator = torch.Generator().manual_seed(self.params.bank_seed)
        chosen = with_cxr[torch.randperm(len(with_cxr), generator=generator)[: self.params.bank_size]]
        chosen = chosen.sort().values
        n = len(chosen)
        self.bank_ehr.zero_()
        self.bank_cxr.zero_()
        self.bank_fingerprint.fill_(float("nan"))
        if n:
            index = chosen.to(train.inputs["ehr"].device)
            self.bank_ehr[:n] = train.inputs["ehr"][index].to(self.bank_ehr)
            self.bank_cxr[:n] = train.inputs["cxr"][index].to(self.bank_cxr)
            self.bank_fingerprint[:n] = self._fingerprint(self.bank_ehr[:n])
        self.bank_count.fill_(n)

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> Output:
        inputs, present = batch["inputs"], batch["present"]["cxr"].bool()
        rows = present.shape[0]
        if not self.training and rows < MIN_EVAL_ROWS:
            pad = torch.zeros(MIN_EVAL_ROWS - rows, dtype=torch.long, device=present.device)
            index = torch.cat([torch.arange(rows, device=present.device), pad])
            padded = {"inputs": {m: inputs[m][index] for m in self.modalities},
                      "present": {"ehr": batch["present"]["ehr"][index], "cxr": present[index]}}
            out = self._forward(padded)
            return Output(logits=out.logits[:rows], embeddings={m: e[:rows] for m, e in out.embeddings.items()},
                          aux_losses=out.aux_losses)
        return self._forward(batch)

    def _forward(self, batch: Batch) -> Output:
        inputs, present_cxr = batch["inputs"], batch["present"]["cxr"].bool()
        ehr = inputs["ehr"]
        present = {"ehr": torch.ones_like(present_cxr), "cxr": present_cxr}
        features = {"ehr": self.encoders["ehr"](ehr),
                    "cxr": keep_present(self.encoders["cxr"](inputs["cxr"]), present_cxr)}
        graphs = self.fusion["graphs"]
        projected = {m: graphs[m].projection(features[m]) for m in self.modalities}

        mixed = dict(features)
        n_bank = int(self.bank_count)
        if n_bank > 0:
            bank_features = {"ehr": self.encoders["ehr"](self.bank_ehr[:n_bank]),
                             "cxr": self.encoders["cxr"](self.bank_cxr[:n_bank])}
            bank_projected = {m: graphs[m].projection(bank_features[m]) for m in self.modalities}
            threshold = torch.sigmoid(self.fusion.threshold_logit)

            bank_kernels, query_kernels = [], {}
            for m in self.modalities:
                bank_distances = _pairwise_sq_distances(bank_projected[m], bank_projected[m])
                scale = self._bandwidth(bank_distances.detach())
                bank_kernels.append(self._kernel(bank_distances, scale))
                query_kernels[m] = self._kernel(_pairwise_sq_distances(projected[m], bank_projected[m]), scale)
            bank_adjacency, _ = _row_normalise(torch.relu(torch.stack(bank_kernels).mean(dim=0) - threshold))

            both = (query_kernels["ehr"] + query_kernels["cxr"]) / 2
            similarity = torch.where(present_cxr[:, None], both, query_kernels["ehr"])
            own_row = self._own_bank_rows(ehr, n_bank)
            similarity = torch.where(own_row, torch.zeros((), dtype=similarity.dtype, device=similarity.device), similarity)
            query_adjacency, has_neighbour = _row_normalise(torch.relu(similarity - threshold))

            for m in self.modalities:
                bank_hidden = torch.relu(graphs[m].bank_layer(bank_adjacency @ bank_features[m]))
                graph_feature = torch.relu(graphs[m].query_layer(query_adjacency @ bank_hidden))
                gate = torch.sigmoid(graphs[m].gate(torch.cat([features[m], graph_feature], dim=1)))
                blended = gate * features[m] + (1 - gate) * graph_feature
                observed = torch.where(has_neighbour[:, None], blended, features[m])
                imputed = torch.where(has_neighbour[:, None], graph_feature, torch.zeros_like(graph_feature))
                mixed[m] = torch.where(present[m][:, None], observed, imputed)

        logits = self.head(self.fusion["mlp"](torch.cat([mixed["ehr"], mixed["cxr"]], dim=1)))
        return Output(logits=logits, embeddings=features,
                      aux_losses={"stability": self.params.stability_weight * self._stability(features, projected, present)})

    @staticmethod
    def _bandwidth(bank_distances: torch.Tensor) -> torch.Tensor:
        """The bank's mean squared distance between distinct stays (1 for a one-stay bank)."""
        n = bank_distances.shape[0]
        if n < 2:
            return torch.ones((), dtype=bank_distances.dtype, device=bank_distances.device)
        return (bank_distances.sum() / (n * (n - 1))).clamp_min(1e-6)

    def _kernel(self, distances: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Mean of Gaussian kernels whose bandwidths are centred (geometrically) on ``scale``."""
        count, mul = self.params.kernel_count, self.params.kernel_multiplier
        kernels = [torch.exp(-distances / (scale * mul ** (k - (count - 1) / 2))) for k in range(count)]
        return torch.stack(kernels).mean(dim=0)

    def _own_bank_rows(self, ehr: torch.Tensor, n_bank: int) -> torch.Tensor:
        """[B, n_bank] True where the bank row is this very stay (same EHR fingerprint)."""
        mine = self._fingerprint(ehr)[:, None]
        bank = self.bank_fingerprint[:n_bank][None, :]
        return (mine - bank).abs() <= 1e-9 * (1.0 + mine.abs())

    @staticmethod
    def _stability(features: dict, projected: dict, present: dict) -> torch.Tensor:
        total = None
        for m, h in features.items():
            gap = (projected[m].norm(dim=1) - h.norm(dim=1)).abs()
            keep = present[m]
            gap = torch.where(keep, gap, torch.zeros((), dtype=gap.dtype, device=gap.device))
            term = gap.sum() / keep.sum().clamp_min(1).to(gap.dtype)
            total = term if total is None else total + term
        return total
