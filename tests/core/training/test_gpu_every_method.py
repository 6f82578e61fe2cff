"""Every registered fusion method trains one epoch and predicts on CUDA under AMP (issue 12).

The method list is read from the ``FUSIONS`` registry at collection time, so a newly registered method (or an
installed plugin) is covered without editing this file. Both CXR inputs are covered: cached embeddings, and
``--cxr-input images`` with timm's tiny ``test_efficientnet`` backbone (32 px), fine-tuned end to end.
Without CUDA every test here skips.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import mmfair.core.fusion  # noqa: F401  (registers the methods)
from tiny_workspace import build_tiny_workspace
from mmfair.core.config import TrainConfig
from mmfair.core.registry import FUSIONS
from mmfair.core.training import load_run, predict, train_run
from mmfair.core.training.runs import read_predictions_text
from mmfair.core.training.trainer import amp_dtype
from test_image_mode import image_ws  # noqa: F401  (fixture: the tiny workspace with a timm test backbone)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

METHODS = sorted(FUSIONS.names())
# tree estimators (``kind: estimator``, e.g. gbm-*) refuse --cxr-input images: it belongs to the neural loop
NEURAL = [n for n in METHODS if (FUSIONS.entry(n).extra or {}).get("kind") != "estimator"]


@pytest.fixture(scope="module")
def embeddings_ws(tmp_path_factory):
    return build_tiny_workspace(tmp_path_factory.mktemp("gpu") / "ws")


def _train_and_predict(ws, fusion: str, **kw) -> None:
    config = TrainConfig(fusion=fusion, epochs=1, patience=1, hidden_dim=16, batch_size=32, device="cuda", **kw)
    result = train_run(config, ws)
    history = pd.read_csv(result.run_dir / "history.csv")
    assert len(history) >= 1
    if "train_loss" in history:     # a neural method (estimators such as gbm-* write their own history)
        assert len(history) == 1 and np.isfinite(history["train_loss"]).all()
    run = load_run(result.run_dir, device="cuda")
    saved = read_predictions_text(result.run_dir / "predictions_test.csv")
    again = predict(run, "test")
    pd.testing.assert_frame_equal(again.drop(columns="score"), saved.drop(columns="score"))
    scored = saved["score"].notna()
    assert scored.any() and (again["score"].notna() == scored).all()
    assert saved.loc[scored, "score"].between(0, 1).all()
    # GPU kernels may reduce in another order between the two passes; the saved scores are rounded
    np.testing.assert_allclose(again.loc[scored, "score"], saved.loc[scored, "score"], rtol=0, atol=1e-4)


def test_cuda_training_runs_under_amp():
    assert amp_dtype(torch.device("cuda")) in (torch.bfloat16, torch.float16)


@pytest.mark.parametrize("fusion", METHODS)
def test_method_trains_and_predicts_on_cuda_with_embeddings(embeddings_ws, fusion):
    _train_and_predict(embeddings_ws, fusion)


@pytest.mark.parametrize("fusion", NEURAL)
def test_method_trains_and_predicts_on_cuda_with_images(image_ws, fusion):  # noqa: F811
    _train_and_predict(image_ws, fusion, cxr_input="images")
