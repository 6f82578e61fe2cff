"""The model contract (DESIGN §5) for every registered fusion method, incl. the placeholder rule."""

from __future__ import annotations

import pytest
import torch

import mmfair.core.fusion  # noqa: F401  (registers the methods)
import mmfair.core.training  # noqa: F401  (registers the presets, so every collection order sees them all)
from fusion_batches import BinaryTask, one_cpu_thread  # noqa: F401  (one_cpu_thread: autouse fixture)
from mmfair.core.fusion import FusionSpec, Output
from mmfair.core.registry import FUSIONS

F, D, T, B = 4, 12, 48, 10


def make_spec(n_outputs: int = 1, output_kind: str = "sigmoid", encoder: str = "lstm") -> FusionSpec:
    return FusionSpec(n_features=F, cxr_dim=D, n_outputs=n_outputs, hidden_dim=16, ehr_encoder=encoder,
                      dropout=0.1, output_kind=output_kind, seq_len=T)


def make_batch(cxr_present: torch.Tensor, n_outputs: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    cxr = torch.randn(B, D, generator=g)
    cxr[~cxr_present] = 0.0  # the store's placeholder
    return {
        "inputs": {"ehr": torch.randn(B, T, 2 * F, generator=g), "cxr": cxr},
        "present": {"ehr": torch.ones(B, dtype=torch.bool), "cxr": cxr_present.clone()},
        "labels": (torch.rand(B, n_outputs, generator=g) > 0.5).float(),
    }


PRESENCE = {
    "some_absent": torch.tensor([True, False] * (B // 2)),
    "all_absent": torch.zeros(B, dtype=torch.bool),
    "all_present": torch.ones(B, dtype=torch.bool),
}



def _kind(name: str) -> str:
    """``nn`` (an nn.Module factory, the contract below) or ``estimator`` (fit/predict_proba on arrays)."""
    return FUSIONS.entry(name).extra.get("kind", "nn")


NN_METHODS = sorted(n for n in FUSIONS.names() if _kind(n) == "nn")
ESTIMATORS = sorted(n for n in FUSIONS.names() if _kind(n) == "estimator")


@pytest.fixture(params=NN_METHODS)
def method(request):
    return request.param


def test_every_entry_declares_a_known_kind():
    assert {_kind(n) for n in FUSIONS.names()} <= {"nn", "estimator"}
    assert ESTIMATORS and NN_METHODS


@pytest.mark.parametrize("name", sorted(FUSIONS.names()))
def test_registry_entries_document_their_paper(name):
    entry = FUSIONS.entry(name)
    assert entry.summary and entry.paper
    assert isinstance(entry.obj.handles_missing, bool)
    assert set(entry.obj.modalities) <= {"ehr", "cxr", "static"}
    import importlib

    doc = importlib.import_module(entry.obj.__module__).__doc__ or ""
    assert "deviation" in doc.lower() and ("et al" in doc)


@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("presence", sorted(PRESENCE))
def test_forward_backward_shapes_and_groups(method, n_outputs, presence):
    torch.manual_seed(0)
    model = FUSIONS.get(method)(make_spec(n_outputs))
    batch = make_batch(PRESENCE[presence], n_outputs)
    out = model(batch)
    assert isinstance(out, Output)
    assert out.logits.shape == (B, n_outputs)
    probs = torch.sigmoid(out.logits)
    scorable = model.scorable(batch["present"])
    assert torch.isfinite(out.logits[scorable]).all()
    assert ((probs[scorable] >= 0) & (probs[scorable] <= 1)).all()
    for m, emb in out.embeddings.items():
        assert m in model.modalities and emb.shape[0] == B
    loss = model.training_loss(out, batch, BinaryTask())
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    groups = model.param_groups()
    allowed = {f"encoder:{m}" for m in model.modalities} | {"fusion", "head"}
    assert set(groups) <= allowed and "head" in groups
    assert {f"encoder:{m}" for m in model.modalities} <= set(groups)
    grouped = [id(p) for ps in groups.values() for p in ps]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # a partition of every parameter


@pytest.mark.parametrize("presence", ["some_absent", "all_absent"])
@pytest.mark.parametrize("placeholder", ["random", "huge", "nan"])
def test_placeholders_of_absent_modality_never_change_predictions(method, presence, placeholder):
    torch.manual_seed(0)
    model = FUSIONS.get(method)(make_spec(2)).eval()
    batch = make_batch(PRESENCE[presence], 2)
    absent = ~batch["present"]["cxr"]
    scrambled = {**batch, "inputs": dict(batch["inputs"])}
    cxr = batch["inputs"]["cxr"].clone()
    fill = {"random": torch.randn(int(absent.sum()), D), "huge": torch.full((int(absent.sum()), D), 1e6),
            "nan": torch.full((int(absent.sum()), D), float("nan"))}[placeholder]
    cxr[absent] = fill
    scrambled["inputs"]["cxr"] = cxr
    with torch.no_grad():
        reference, other = model(batch).logits, model(scrambled).logits
    scorable = model.scorable(batch["present"])
    assert torch.equal(reference[scorable], other[scorable])


def test_cxr_only_cannot_score_without_an_image():
    model = FUSIONS.get("cxr")(make_spec())
    present = {"ehr": torch.ones(4, dtype=torch.bool), "cxr": torch.tensor([True, False, True, False])}
    assert model.scorable(present).tolist() == [True, False, True, False]
    assert FUSIONS.get("cxr").handles_missing is False


def test_late_averages_probabilities_and_falls_back_to_ehr():
    torch.manual_seed(0)
    model = FUSIONS.get("late")(make_spec(3)).eval()
    batch = make_batch(PRESENCE["some_absent"], 3)
    with torch.no_grad():
        out = model(batch)
    p_ehr = torch.sigmoid(out.unimodal_logits["ehr"])
    p_cxr = torch.sigmoid(out.unimodal_logits["cxr"])
    expected = torch.where(batch["present"]["cxr"][:, None], (p_ehr + p_cxr) / 2, p_ehr)
    torch.testing.assert_close(torch.sigmoid(out.logits), expected, rtol=1e-5, atol=1e-6)
    absent = ~batch["present"]["cxr"]
    torch.testing.assert_close(out.logits[absent], out.unimodal_logits["ehr"][absent], rtol=1e-5, atol=1e-5)


def test_late_softmax_averages_class_probabilities():
    torch.manual_seed(0)
    model = FUSIONS.get("late")(make_spec(4, "softmax")).eval()
    batch = make_batch(PRESENCE["some_absent"], 4)
    with torch.no_grad():
        out = model(batch)
    p = {m: torch.softmax(z, dim=1) for m, z in out.unimodal_logits.items()}
    expected = torch.where(batch["present"]["cxr"][:, None], (p["ehr"] + p["cxr"]) / 2, p["ehr"])
    torch.testing.assert_close(torch.softmax(out.logits, dim=1), expected, rtol=1e-5, atol=1e-6)


def test_late_loss_is_the_sum_of_unimodal_losses_on_present_stays():
    torch.manual_seed(0)
    model = FUSIONS.get("late")(make_spec())
    batch = make_batch(PRESENCE["some_absent"])
    out = model(batch)
    task = BinaryTask()
    expected = task.loss(out.unimodal_logits["ehr"], batch["labels"]) + task.loss(
        out.unimodal_logits["cxr"], batch["labels"], batch["present"]["cxr"]
    )
    torch.testing.assert_close(model.training_loss(out, batch, task), expected)
    model.training_loss(out, batch, task).backward()
    # the CXR branch learns only from stays with a CXR: zero loss weight elsewhere → no gradient from them
    assert all(p.grad is not None for p in model.encoders["cxr"].parameters())


def test_early_uses_presence_indicator():
    torch.manual_seed(0)
    model = FUSIONS.get("early")(make_spec()).eval()
    batch = make_batch(PRESENCE["all_present"])
    no_cxr = {**batch, "present": {"ehr": batch["present"]["ehr"], "cxr": torch.zeros(B, dtype=torch.bool)}}
    with torch.no_grad():
        assert not torch.equal(model(batch).logits, model(no_cxr).logits)


# ---- images mode: every method again, the CXR input being uint8 images through timm's tiny test backbone ----
IMAGE_SIZE = 32


def make_image_spec(n_outputs: int = 2) -> FusionSpec:
    from mmfair.core.encoders.cxr_images import CXRImageSpec

    image = CXRImageSpec(model_name="test_efficientnet", image_size=IMAGE_SIZE, norm_mean=0.45, norm_std=0.25)
    return FusionSpec(n_features=F, cxr_dim=256, n_outputs=n_outputs, hidden_dim=16, dropout=0.1, seq_len=T,
                      cxr_image=image)  # 256: test_efficientnet's pooled width


def make_image_batch(cxr_present: torch.Tensor, n_outputs: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (B, IMAGE_SIZE, IMAGE_SIZE), generator=g, dtype=torch.uint8)
    images[~cxr_present] = 0
    return {
        "inputs": {"ehr": torch.randn(B, T, 2 * F, generator=g), "cxr": images},
        "present": {"ehr": torch.ones(B, dtype=torch.bool), "cxr": cxr_present.clone()},
        "labels": (torch.rand(B, n_outputs, generator=g) > 0.5).float(),
    }


@pytest.mark.parametrize("presence", ["some_absent", "all_absent"])
def test_images_mode_forward_backward_and_placeholders(method, presence):
    torch.manual_seed(0)
    model = FUSIONS.get(method)(make_image_spec())
    batch = make_image_batch(PRESENCE[presence])
    out = model(batch)
    assert out.logits.shape == (B, 2)
    scorable = model.scorable(batch["present"])
    assert torch.isfinite(out.logits[scorable]).all()
    model.training_loss(out, batch, BinaryTask()).backward()
    groups = model.param_groups()
    grouped = [id(p) for ps in groups.values() for p in ps]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    if "cxr" in model.modalities:
        assert {id(p) for p in model.image_encoder.parameters()} <= {id(p) for p in groups["encoder:cxr"]}
    model.eval()
    scrambled = {**batch, "inputs": dict(batch["inputs"])}
    images = batch["inputs"]["cxr"].clone()
    images[~batch["present"]["cxr"]] = 255
    scrambled["inputs"]["cxr"] = images
    with torch.no_grad():
        assert torch.equal(model(batch).logits[scorable], model(scrambled).logits[scorable])


# ---- estimators (kind="estimator"): fit/predict_proba on a fold's arrays, absent CXR as NaN features ----
def make_arrays(n: int, n_outputs: int, softmax: bool, seed: int):
    import numpy as np

    from mmfair.core.fusion._gbm import FoldArrays

    rng = np.random.default_rng(seed)
    ehr = rng.normal(size=(n, T, F)).astype(np.float32)
    ehr[rng.random(ehr.shape) < 0.5] = np.nan
    present_cxr = rng.random(n) < 0.6
    cxr = rng.normal(size=(n, D)).astype(np.float32)
    cxr[~present_cxr] = 0.0  # the placeholder
    signal = np.nan_to_num(ehr[:, -1, 0]) + np.where(present_cxr, cxr[:, 0], 0.0)
    if softmax:
        labels = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_outputs + 1)[1:-1]))
    else:
        labels = np.stack([(signal + 0.3 * j > 0).astype(float) for j in range(n_outputs)], axis=1)
    return FoldArrays(ehr=ehr, cxr=cxr, present_ehr=np.ones(n, dtype=bool), present_cxr=present_cxr, labels=labels)


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("n_outputs,softmax", [(1, False), (3, False), (4, True)])
def test_estimator_contract(name, n_outputs, softmax):
    import numpy as np

    from mmfair.core.fusion._gbm import EstimatorSpec

    factory = FUSIONS.get(name)
    spec = EstimatorSpec(n_outputs=n_outputs, output_kind="softmax" if softmax else "sigmoid",
                         feature_names=tuple(f"v{j}" for j in range(F)), cxr_dim=D)
    est = factory(spec, factory.Params(n_estimators=20, min_child_samples=5))
    train, val, test = (make_arrays(n, n_outputs, softmax, s) for n, s in ((120, 0), (60, 1), (40, 2)))
    history = est.fit(train, val)
    assert len(history) >= 1 and {"seconds", "best_iteration"} <= set(history.columns)
    p = est.predict_proba(test)
    assert p.shape == (40, n_outputs) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    if softmax:
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    scrambled = make_arrays(40, n_outputs, softmax, 2)
    scrambled.cxr[~scrambled.present_cxr] = np.nan if n_outputs == 1 else 1e6
    assert np.array_equal(p, est.predict_proba(scrambled))  # absent rows' embedding values are never read
    again = factory.from_state(spec, est.params, est.state())
    assert np.array_equal(p, again.predict_proba(test)) and est.size() > 0
