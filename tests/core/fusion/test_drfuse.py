"""Properties of ``drfuse`` (DrFuse, Yao et al. 2024) that could fail: the disease-wise attention, the
absent-CXR rule, the masking of every CXR-side loss, and the logit averaging of the shared features."""

from __future__ import annotations

import pytest
import torch

import mmfair.core.fusion  # noqa: F401  (registers the methods)
from fusion_batches import one_cpu_thread, random_batch  # noqa: F401  (one_cpu_thread: autouse fixture)
from mmfair.core.fusion import FusionSpec
from mmfair.core.fusion._drfuse import CXR_SLOT, DrFuse, bernoulli_jsd, logit_of_mean_probability
from mmfair.core.registry import FUSIONS
from mmfair.core.training.tasks import get_task

F, D, T, B = 4, 12, 48, 8
SOME = torch.tensor([True, False] * (B // 2))



def make_spec(n_outputs: int = 3, output_kind: str = "sigmoid") -> FusionSpec:
    return FusionSpec(n_features=F, cxr_dim=D, n_outputs=n_outputs, hidden_dim=16, dropout=0.1,
                      output_kind=output_kind, seq_len=T)


def make_batch(present_cxr: torch.Tensor, n_outputs: int = 3, seed: int = 0) -> dict:
    return random_batch(present_cxr, F, D, T, n_outputs=n_outputs, seed=seed)


def test_registered_with_params():
    assert FUSIONS.get("drfuse") is DrFuse
    params = DrFuse.Params(lambda_attn_aux=0.5)
    assert params.lambda_attn_aux == 0.5 and params.lambda_pred_cxr == 1.0
    with pytest.raises(ValueError):
        DrFuse.Params(lambda_pred_ehr=-1.0)


def test_one_attention_distribution_per_label_and_zero_weight_on_an_absent_cxr():
    torch.manual_seed(0)
    model = DrFuse(make_spec(3)).eval()
    with torch.no_grad():
        out = model(make_batch(SOME))
    attention = out.attention
    assert attention.shape == (B, 3, 3)  # [stay, label, token]
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(B, 3))
    assert torch.all(attention[~SOME, :, CXR_SLOT] == 0.0)
    assert torch.all(attention[SOME, :, CXR_SLOT] > 0.0)
    # each label has its own keys, so the labels' distributions differ
    assert not torch.allclose(attention[:, 0], attention[:, 1])


def test_final_logit_of_each_label_reads_only_that_labels_feature():
    """Changing the read-out of label 0 changes only label 0's logit (the per-label 'diagonal')."""
    torch.manual_seed(0)
    model = DrFuse(make_spec(3)).eval()
    b = make_batch(SOME)
    with torch.no_grad():
        before = model(b).logits
        model.heads["final"].weight[0] += 1.0
        after = model(b).logits
    assert not torch.allclose(before[:, 0], after[:, 0])
    torch.testing.assert_close(before[:, 1:], after[:, 1:], rtol=0, atol=0)


def test_shared_feature_is_logit_of_mean_probability_and_ehr_alone_without_cxr():
    a, b = torch.tensor([[-30.0, 0.0, 2.0]]), torch.tensor([[30.0, 1.0, -3.0]])
    expected = torch.logit((torch.sigmoid(a.double()) + torch.sigmoid(b.double())) / 2).float()
    torch.testing.assert_close(logit_of_mean_probability(a, b), expected, rtol=1e-5, atol=1e-5)
    # absent CXR: the shared head sees h_ehr, so replacing the CXR slot's features cannot matter and
    # the shared logits equal heads.shared applied to the projected EHR shared feature
    torch.manual_seed(0)
    model = DrFuse(make_spec(2)).eval()
    batch = make_batch(torch.zeros(B, dtype=torch.bool), 2)
    with torch.no_grad():
        out = model(batch)
        ehr_shared_raw, _ = model.encoders["ehr"](batch["inputs"]["ehr"])
        by_hand = model.heads["shared"](model.fusion["shared_project"](ehr_shared_raw))
    torch.testing.assert_close(out.shared_logits, by_hand)


def test_jsd_is_zero_for_equal_features_and_bounded_by_log2():
    h = torch.randn(5, 7)
    torch.testing.assert_close(bernoulli_jsd(h, h), torch.zeros(5), rtol=0, atol=1e-6)
    far = bernoulli_jsd(torch.full((1, 3), -50.0), torch.full((1, 3), 50.0))
    torch.testing.assert_close(far, torch.full((1,), float(torch.log(torch.tensor(2.0)))), rtol=1e-4, atol=1e-4)


def _input_gradient(model: DrFuse, batch: dict, loss_of) -> torch.Tensor:
    ehr = batch["inputs"]["ehr"].clone().requires_grad_(True)
    out = model({**batch, "inputs": {**batch["inputs"], "ehr": ehr}})
    (grad,) = torch.autograd.grad(loss_of(out), ehr, allow_unused=True)
    return torch.zeros_like(ehr) if grad is None else grad


def test_cxr_side_losses_give_absent_stays_no_gradient():
    """JSD and the attention ranking loss reach the EHR input only through stays with a CXR."""
    torch.manual_seed(0)
    model = DrFuse(make_spec(3))
    batch = make_batch(SOME)
    task = get_task("phenotype")
    for loss_of in (
        lambda out: out.aux_losses["shared_jsd"],
        lambda out: model.attention_ranking_loss(out, batch["labels"], task.kind, out.cxr_present),
    ):
        torch.manual_seed(1)  # the same dropout masks for every pass
        grad = _input_gradient(model, batch, loss_of)
        per_stay = grad.abs().flatten(1).sum(dim=1)
        assert torch.all(per_stay[~SOME] == 0.0)
        assert torch.all(per_stay[SOME] > 0.0)


def test_cxr_prediction_loss_ignores_labels_of_absent_stays():
    """heads.cxr learns only from the CXR prediction loss, which counts stays with a CXR only."""
    task = get_task("phenotype")

    def cxr_head_grad(labels: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)
        model = DrFuse(make_spec(3)).eval()
        batch = {**make_batch(SOME), "labels": labels}
        model.zero_grad()
        model.training_loss(model(batch), batch, task).backward()
        return model.heads["cxr"].weight.grad.clone()

    labels = make_batch(SOME)["labels"]
    flipped_absent, flipped_present = labels.clone(), labels.clone()
    flipped_absent[~SOME] = 1.0 - flipped_absent[~SOME]
    flipped_present[SOME] = 1.0 - flipped_present[SOME]
    reference = cxr_head_grad(labels)
    assert reference.abs().sum() > 0
    torch.testing.assert_close(cxr_head_grad(flipped_absent), reference, rtol=0, atol=0)
    assert not torch.allclose(cxr_head_grad(flipped_present), reference)


def test_all_absent_batch_has_zero_cxr_side_losses():
    torch.manual_seed(0)
    model = DrFuse(make_spec(3))
    batch = make_batch(torch.zeros(B, dtype=torch.bool))
    out = model(batch)
    assert out.aux_losses["shared_jsd"].item() == 0.0
    assert out.aux_losses["cxr_orthogonality"].item() == 0.0
    assert model.attention_ranking_loss(out, batch["labels"], "multilabel", out.cxr_present).item() == 0.0
    assert out.aux_losses["ehr_orthogonality"].item() > 0.0


def test_ranking_loss_pushes_attention_toward_the_lower_loss_modality():
    """One SGD step on the ranking loss alone raises the CXR weight where the CXR prediction was better."""
    torch.manual_seed(0)
    model = DrFuse(make_spec(1)).eval()
    batch = make_batch(torch.ones(B, dtype=torch.bool), 1)
    with torch.no_grad():
        model.heads["cxr"].bias.fill_(0.0)
        model.heads["cxr"].weight.fill_(0.0)  # CXR predicts 0.5 …
        model.heads["ehr"].bias.fill_(-8.0)
        model.heads["ehr"].weight.fill_(0.0)  # … EHR predicts ~0: worse wherever the label is 1
    positive = batch["labels"][:, 0] == 1.0
    assert positive.any()
    out = model(batch)
    before = out.attention[:, 0, CXR_SLOT] - out.attention[:, 0, 0]
    loss = model.attention_ranking_loss(out, batch["labels"], "binary", out.cxr_present)
    loss.backward()
    with torch.no_grad():
        for p in model.fusion["attention"].parameters():
            p -= 0.5 * p.grad
        after_out = model(batch)
    after = after_out.attention[:, 0, CXR_SLOT] - after_out.attention[:, 0, 0]
    violated = positive & (before < 0)  # CXR was better here but got less attention than the EHR
    assert violated.any() and loss.item() > 0.0
    assert torch.all(after[violated] > before[violated])


def test_multiclass_training_loss_is_finite_and_trains_every_head():
    torch.manual_seed(0)
    model = DrFuse(make_spec(7, "softmax"))
    batch = make_batch(SOME, 7)
    batch["labels"] = torch.randint(0, 7, (B,))
    loss = model.training_loss(model(batch), batch, get_task("los"))
    assert torch.isfinite(loss)
    loss.backward()
    for name in ("ehr", "cxr", "shared", "final"):
        assert model.heads[name].weight.grad.abs().sum() > 0


def test_eval_prediction_does_not_depend_on_the_rest_of_the_batch():
    torch.manual_seed(0)
    model = DrFuse(make_spec(3)).eval()
    batch = make_batch(SOME)
    single = {
        "inputs": {m: x[1:2] for m, x in batch["inputs"].items()},
        "present": {m: x[1:2] for m, x in batch["present"].items()},
        "labels": batch["labels"][1:2],
    }
    with torch.no_grad():
        torch.testing.assert_close(model(single).logits, model(batch).logits[1:2], rtol=1e-5, atol=1e-6)
