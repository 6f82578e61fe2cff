"""Every registered method learns the planted mortality signal on the demo preset (slow; issue 4/5 check).

Fold 0 of the 2,000-stay synthetic demo source: each method's clean test AUROC must reach 0.60 with a
patient-level bootstrap CI whose lower bound is above 0.5. Methods that need the CXR (`cxr`, `daft`)
are scored on the stays that have one, as the evaluator does for every method that cannot score a stay.
"""

import os

import pandas as pd
import pytest

from mmfair.core import pipeline
from mmfair.core.config import PrepConfig, SyntheticConfig, TrainConfig
from mmfair.core.registry import FUSIONS
from mmfair.core.workspace import Workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean_metrics(tmp_path_factory) -> pd.DataFrame:
    import mmfair.core.fusion  # noqa: F401
    import mmfair.core.training  # noqa: F401

    root = os.environ.get("MMFAIR_METHODS_WORKSPACE")
    ws = Workspace.resolve(root or tmp_path_factory.mktemp("methods") / "ws")
    pipeline.prep(PrepConfig(image_size=128), ws, synthetic=SyntheticConfig())
    configs = [TrainConfig(fusion=name, task="mortality", fold=0) for name in FUSIONS.names()]
    return pipeline.train(configs, ws, bootstrap=500).metrics


def test_every_method_learns_mortality(clean_metrics):
    import mmfair.core.fusion  # noqa: F401

    rows = clean_metrics[(clean_metrics["metric"] == "auroc") & (clean_metrics["label"] == "all")
                         & (clean_metrics["group"] == "all")]
    summary = rows.set_index("method")[["value", "ci_low", "ci_high", "n"]].sort_values("value")
    print("\n" + summary.to_string())
    assert set(summary.index) >= set(FUSIONS.names())
    weak = summary[(summary["value"] < 0.60) | (summary["ci_low"] <= 0.5)]
    assert weak.empty, f"methods below the bar:\n{weak}"
