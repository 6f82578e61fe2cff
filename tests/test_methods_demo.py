"""Every registered method learns the planted mortality signal on the demo preset (slow; issue 4/5 check).

Fold 0 of the 2,000-stay synthetic demo source (its natural, group-dependent CXR missingness, full
cohort): each method's clean test AUROC must reach 0.60 with a patient-level bootstrap CI whose lower
bound is above 0.5. Methods that need the CXR (`cxr`, `daft`) are scored on the stays that have one, as
the evaluator does for every method that cannot score a stay. Then eval-fair compares every method with
`late` on the same test stays and the report answers, with CIs, whether the missing-aware methods beat
late fusion on the stays without a CXR — whichever way it comes out (printed with `-s`).
"""

import os

import pandas as pd
import pytest

from mmfair.core import pipeline
from mmfair.core.config import PrepConfig, SyntheticConfig, TrainConfig
from mmfair.core.registry import FUSIONS
from mmfair.core.workspace import Workspace

pytestmark = pytest.mark.slow


MISSING_AWARE = ("drfuse", "healnet", "flexmoe", "umse", "shaspec", "m3care", "smil")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    root = os.environ.get("MMFAIR_METHODS_WORKSPACE")
    ws = Workspace.resolve(root or tmp_path_factory.mktemp("methods") / "ws")
    pipeline.prep(PrepConfig(image_size=128), ws, synthetic=SyntheticConfig())
    return ws


@pytest.fixture(scope="module")
def clean_metrics(workspace) -> pd.DataFrame:
    import mmfair.core.fusion  # noqa: F401
    import mmfair.core.training  # noqa: F401

    configs = [TrainConfig(fusion=name, task="mortality", fold=0) for name in FUSIONS.names()]
    return pipeline.train(configs, workspace, bootstrap=500).metrics


def test_every_method_learns_mortality(clean_metrics):
    import mmfair.core.fusion  # noqa: F401

    rows = clean_metrics[(clean_metrics["metric"] == "auroc") & (clean_metrics["label"] == "all")
                         & (clean_metrics["group"] == "all")]
    summary = rows.set_index("method")[["value", "ci_low", "ci_high", "n"]].sort_values("value")
    print("\n" + summary.to_string())
    assert set(summary.index) >= set(FUSIONS.names())
    weak = summary[(summary["value"] < 0.60) | (summary["ci_low"] <= 0.5)]
    assert weak.empty, f"methods below the bar:\n{weak}"


def test_report_answers_whether_missing_aware_methods_beat_late_without_a_cxr(workspace, clean_metrics):
    from mmfair.core.config import EvalFairConfig, ReportConfig

    pipeline.eval_fair(EvalFairConfig(attributes=("race_group", "has_cxr"), bootstrap=500, reference="late",
                                      permutations=500), workspace)
    tables = pipeline.report_tables(ReportConfig(format="markdown"), workspace)
    table = tables["comparisons_no_cxr"]
    print("\n" + table.to_string())
    print("\n".join(table.attrs.get("footnotes", [])))
    shown = " ".join(table.astype(str).to_numpy().ravel())
    for method in MISSING_AWARE:
        assert method in shown, f"{method} missing from the no-CXR comparison"
    assert "[" in shown  # every difference carries its confidence interval
    answer = table.attrs.get("footnotes", [""])[0]
    assert "late" in answer and answer.strip()
