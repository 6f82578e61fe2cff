"""SMIL: k-means priors from the training split, reconstruction of an absent CXR at evaluation, and a
Monte-Carlo meta-learning loss that uses its samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion_batches import BinaryTask, one_cpu_thread  # noqa: F401  (one_cpu_thread: autouse fixture)
from mmfair.core.fusion import FusionSpec
from mmfair.core.registry import FUSIONS
from mmfair.core.training.data import Split

F, D, T = 3, 12, 8



def make_model(**params) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = FUSIONS.get("smil")
    spec = FusionSpec(n_features=F, cxr_dim=D, n_outputs=2, hidden_dim=16, dropout=0.1, seq_len=T)
    return cls(spec, cls.Params(**params))


def make_split(cxr: torch.Tensor, present: torch.Tensor, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    n = len(present)
    return Split(name="train", rows=np.arange(n), inputs={"ehr": torch.randn(n, T, 2 * F, generator=g), "cxr": cxr},
                 present={"ehr": torch.ones(n, dtype=torch.bool), "cxr": present},
                 labels=(torch.rand(n, 2, generator=g) > 0.5).float())


def blobs(centres: torch.Tensor, per_blob: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat([c + 0.01 * torch.randn(per_blob, D, generator=g) for c in centres])


def random_split(n: int = 16, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed + 100)
    present = torch.arange(n) % 2 == 0
    cxr = torch.randn(n, D, generator=g)
    cxr[~present] = 0.0
    return make_split(cxr, present, seed)


def sort_rows(x: torch.Tensor) -> torch.Tensor:
    return x[torch.argsort(x[:, 0])]


def test_priors_are_the_kmeans_centres_of_the_training_images_only():
    g = torch.Generator().manual_seed(0)
    centres_a, centres_b = 5 * torch.randn(3, D, generator=g), 5 * torch.randn(3, D, generator=g)
    images_a = blobs(centres_a, 6, seed=1)
    # absent stays hold wild placeholders that k-means must never see
    cxr_a = torch.cat([images_a, torch.full((4, D), 1e6)])
    present_a = torch.cat([torch.ones(18, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)])
    model_a, model_b = make_model(n_priors=3), make_model(n_priors=3)
    model_a.prepare(make_split(cxr_a, present_a))
    model_b.prepare(make_split(blobs(centres_b, 6, seed=2), torch.ones(18, dtype=torch.bool)))
    assert model_a.prior_valid.all() and model_b.prior_valid.all()
    hand_a = torch.stack([images_a[i * 6:(i + 1) * 6].mean(dim=0) for i in range(3)])  # the blob means
    torch.testing.assert_close(sort_rows(model_a.priors), sort_rows(hand_a), rtol=0, atol=1e-5)
    assert not torch.allclose(sort_rows(model_a.priors), sort_rows(model_b.priors), atol=1.0)
    again = make_model(n_priors=3)
    again.prepare(make_split(cxr_a, present_a))
    assert torch.equal(again.priors, model_a.priors) and "priors" in again.state_dict()


def test_fewer_images_than_priors_uses_each_image_once():
    images = torch.randn(2, D)
    present = torch.tensor([True, False, True, False])
    cxr = torch.zeros(4, D)
    cxr[present] = images
    model = make_model(n_priors=10)
    model.prepare(make_split(cxr, present))
    assert int(model.prior_valid.sum()) == 2
    torch.testing.assert_close(sort_rows(model.priors[model.prior_valid]), sort_rows(images))
    mixes = model.reconstruct(torch.randn(5, 16))
    # every reconstruction is a convex mix of the two images: its coordinates lie between theirs
    low, high = images.min(dim=0).values, images.max(dim=0).values
    assert ((mixes >= low - 1e-6) & (mixes <= high + 1e-6)).all()


def test_unprepared_model_reconstructs_the_zero_embedding():
    model = make_model()
    assert torch.equal(model.reconstruct(torch.randn(3, 16)), torch.zeros(3, D))
    with torch.no_grad():
        out = model.eval()(random_split().batch(torch.arange(16)))
    assert torch.isfinite(out.logits).all()


def test_absent_cxr_is_reconstructed_at_evaluation_and_placeholders_never_matter():
    train, test = random_split(40, seed=1), random_split(10, seed=2)
    model = make_model()
    model.prepare(train)
    model.eval()
    batch = test.batch(torch.arange(10))
    absent = ~batch["present"]["cxr"]
    zeros_image = {**batch, "present": {"ehr": batch["present"]["ehr"], "cxr": torch.ones(10, dtype=torch.bool)}}
    with torch.no_grad():
        reconstructed = model(batch).logits
        as_zero_image = model(zeros_image).logits  # CareBench's evaluation: the placeholder fed as an image
    assert not torch.allclose(reconstructed[absent], as_zero_image[absent])
    for fill in (float("nan"), 1e6):
        scrambled = {**batch, "inputs": dict(batch["inputs"])}
        cxr = batch["inputs"]["cxr"].clone()
        cxr[absent] = fill
        scrambled["inputs"]["cxr"] = cxr
        with torch.no_grad():
            assert torch.equal(model(scrambled).logits, reconstructed)


def training_loss(model, batch, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    out = model.train()(batch)
    return model.training_loss(out, batch, BinaryTask())


def test_monte_carlo_samples_change_the_training_loss_but_not_evaluation():
    train = random_split(40, seed=1)
    batch = random_split(20, seed=3).batch(torch.arange(20))
    models = {}
    for mc in (1, 8):
        models[mc] = make_model(mc_size=mc)
        models[mc].prepare(train)
    losses = {mc: training_loss(m, batch, seed=5) for mc, m in models.items()}
    assert not torch.isclose(losses[1], losses[8])
    assert not torch.isclose(training_loss(models[8], batch, seed=5), training_loss(models[8], batch, seed=6))
    with torch.no_grad():
        first = models[8].eval()(batch).logits
        second = models[8].eval()(batch).logits
        other_mc = models[1].eval()(batch).logits
    assert torch.equal(first, second) and torch.equal(first, other_mc)


def test_meta_step_trains_the_reconstruction_and_regulariser_through_the_task_loss():
    train = random_split(40, seed=1)
    batch = random_split(20, seed=3).batch(torch.arange(20))
    model = make_model(kl_weight=0.0, feature_weight=0.0, distill_weight=0.0, inner_lr=0.5)
    model.prepare(train)
    loss = training_loss(model, batch, seed=5)
    loss.backward()
    params = dict(model.named_parameters())
    for name in ("fusion.reconstruction.2.weight", "fusion.regulariser.weight", "head.weight"):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
    no_meta = make_model(kl_weight=0.0, feature_weight=0.0, distill_weight=0.0, inner_steps=0)
    no_meta.prepare(train)
    assert not torch.isclose(training_loss(no_meta, batch, seed=5), loss)


def test_the_inner_step_is_differentiated_through():
    """The log-variance half of the regulariser reaches the meta-val loss only through the adapted head
    θ′ = θ − η∇L_tr (second order): its gradient must change with η, while the meta-train part is equal."""
    train = random_split(40, seed=1)
    batch = random_split(20, seed=3).batch(torch.arange(20))
    losses, log_var_grads = [], []
    for lr in (1e-6, 1.0):
        model = make_model(inner_lr=lr, kl_weight=0.0, feature_weight=0.0, distill_weight=0.0)
        model.prepare(train)
        loss = training_loss(model, batch, seed=5)
        loss.backward()
        losses.append(loss.detach())
        log_var_grads.append(model.fusion["regulariser"].weight.grad[16:].clone())
    assert not torch.isclose(losses[0], losses[1])  # the meta-val loss is taken at the adapted head
    assert not torch.allclose(log_var_grads[0], log_var_grads[1], rtol=1e-4, atol=1e-7)


def test_aux_losses_are_weighted_and_vanish_at_zero_weight():
    train = random_split(40, seed=1)
    batch = random_split(20, seed=3).batch(torch.arange(20))
    on, off = make_model(), make_model(kl_weight=0.0, feature_weight=0.0, distill_weight=0.0)
    for model in (on, off):
        model.prepare(train)
    with torch.no_grad():
        aux_on, aux_off = on.eval()(batch).aux_losses, off.eval()(batch).aux_losses
    assert set(aux_on) == {"kl", "feature", "distill"}
    assert all(float(v) > 0 for v in aux_on.values())
    assert all(float(v) == 0 for v in aux_off.values())
