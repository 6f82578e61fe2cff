"""The planted pulse-oximetry bias, recovered (slow).

The synthetic generator can make SpO2 over-read the true saturation by 2–4.5 points in Black patients
(``SyntheticConfig.spo2_bias``; ground truth ``switches.json``). Respiratory failure loads most on the
respiratory latent that SpO2 measures (``_model.LABEL_MODELS``), so a model trained on the biased readings
should under-predict respiratory failure for Black patients. Two workspaces are built through the library
from the same seed, one with the bias and one without: same stays, same labels, only the SpO2 readings
differ. An EHR-only phenotype model is trained on all five folds of each (out-of-fold test predictions for
every stay), and the gap for the affected group is compared:

    calibration gap = (mean score − observed rate) in BLACK  −  the same in everyone else

on the SpO2-dependent label. Bias on minus bias off must have a patient-level bootstrap interval (stays
paired across the two workspaces, the same resamples for both) that excludes zero, below it. Labels are
identical in the two workspaces, so the observed rates cancel in the difference: what remains is how much
lower the biased model scores Black patients relative to everyone else. The TPR gap at each model's own
validation-chosen threshold (eval-fair's operating point) is printed beside it.

Size: 1,500 stays (about 170 Black, 28 of them with respiratory failure) took 3 min 10 s on 2 busy cores
and gave on − off = −0.012 [−0.019, −0.005]; 2,500 stays took about 7 min and gave −0.021 [−0.024,
−0.018]. The TPR gap (printed) moves the same way but its interval still covers 0 at these sizes: few
Black positives.

Set ``MMFAIR_SPO2_WORKSPACE`` to a folder to keep the two workspaces between runs (prep and training are
skipped when their outputs exist).
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmfair.core import pipeline
from mmfair.core.config import PrepConfig, SyntheticConfig, TrainConfig
from mmfair.core.evaluation.bootstrap import PatientBootstrap
from mmfair.core.evaluation.run_folder import thresholds_for, task_spec
from mmfair.core.workspace import Workspace

pytestmark = pytest.mark.slow

N_STAYS = 1500
FOLDS = range(5)
LABEL = "respiratory_failure"  # loads 2.0 on the respiratory latent (the largest of any label)
GROUP = "BLACK"


def _build(root: Path, spo2_bias: bool) -> list[Path]:
    ws = Workspace.resolve(root / ("bias_on" if spo2_bias else "bias_off"))
    synthetic = SyntheticConfig(n_stays=N_STAYS, seed=0, spo2_bias=spo2_bias, max_image_size=64, min_image_size=48,
                                n_encoder_subjects=60)  # fmt: skip
    # the images only feed the CXR encoder, which an EHR-only model never uses: keep that stage minimal
    prep = PrepConfig(image_size=32, encoder_image_size=32, encoder_max_epochs=1,
                      encoder_max_images=200)  # fmt: skip
    pipeline.prep(prep, ws, synthetic=synthetic)
    configs = [TrainConfig(fusion="ehr", task="phenotype", fold=k, epochs=10, patience=3) for k in FOLDS]
    return [run.run_dir for run in pipeline.train(configs, ws, bootstrap=0).runs]


@pytest.fixture(scope="module")
def predictions(tmp_path_factory) -> dict[str, pd.DataFrame]:
    root = Path(os.environ.get("MMFAIR_SPO2_WORKSPACE") or tmp_path_factory.mktemp("spo2"))
    out = {}
    for name, bias in (("on", True), ("off", False)):
        parts = []
        for run_dir in _build(root, bias):
            test = pd.read_csv(run_dir / "predictions_test.csv")
            spec = task_spec(test)
            threshold = thresholds_for(run_dir, spec, "val-youden")[LABEL]
            parts.append(test.assign(hard=(test[f"score_{LABEL}"] >= threshold).astype(float)))
        out[name] = pd.concat(parts, ignore_index=True)
    return out


def _calibration_gap(y, s, black, w):
    """Weighted (mean s − mean y) in the group minus the same in the rest, for each row of ``w``."""

    def bias(m):
        wm = w[:, m]
        return (wm @ (s[m] - y[m])) / wm.sum(axis=1)

    return bias(black) - bias(~black)


def _tpr_gap(y, hard, black, w):
    def tpr(m):
        wm = w[:, m & (y == 1)]
        return (wm @ hard[m & (y == 1)]) / wm.sum(axis=1)

    return tpr(black) - tpr(~black)


def test_planted_spo2_bias_is_recovered(predictions):
    on, off = predictions["on"], predictions["off"]
    label, score = f"label_{LABEL}", f"score_{LABEL}"
    paired = on[["stay_id", "subject_id", "race_group", label, score, "hard"]].merge(
        off[["stay_id", label, score, "hard"]], on="stay_id", suffixes=("_on", "_off"))
    assert len(paired) == len(on) == len(off), "the two workspaces must hold the same stays"
    assert (paired[f"{label}_on"] == paired[f"{label}_off"]).all(), "same seed, same labels"
    y = paired[f"{label}_on"].to_numpy(dtype=float)
    black = paired["race_group"].to_numpy() == GROUP
    s_on, s_off = paired[f"{score}_on"].to_numpy(dtype=float), paired[f"{score}_off"].to_numpy(dtype=float)
    h_on, h_off = paired["hard_on"].to_numpy(dtype=float), paired["hard_off"].to_numpy(dtype=float)

    boot = PatientBootstrap(paired["subject_id"].to_numpy(), 2000, seed=0)
    ones = np.ones((1, len(paired)))
    gap_on, gap_off = _calibration_gap(y, s_on, black, ones)[0], _calibration_gap(y, s_off, black, ones)[0]
    reps = _calibration_gap(y, s_on, black, boot.weights) - _calibration_gap(y, s_off, black, boot.weights)
    ci = boot.ci(reps)
    tpr_on, tpr_off = _tpr_gap(y, h_on, black, ones)[0], _tpr_gap(y, h_off, black, ones)[0]
    tpr_ci = boot.ci(_tpr_gap(y, h_on, black, boot.weights) - _tpr_gap(y, h_off, black, boot.weights))
    print(
        f"\n{LABEL}: {len(paired)} stays, {int(black.sum())} {GROUP} ({int(y[black].sum())} positive)\n"
        f"calibration gap {GROUP} − rest: bias on {gap_on:+.4f}, off {gap_off:+.4f}, "
        f"on − off {gap_on - gap_off:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]\n"
        f"TPR gap {GROUP} − rest: bias on {tpr_on:+.3f}, off {tpr_off:+.3f}, "
        f"on − off {tpr_on - tpr_off:+.3f} [{tpr_ci.low:+.3f}, {tpr_ci.high:+.3f}]"
    )
    assert ci.high < 0, (
        f"the SpO2 over-reading should lower the biased model's scores for {GROUP} patients: calibration gap "
        f"on − off {gap_on - gap_off:+.4f}, 95% CI [{ci.low:+.4f}, {ci.high:+.4f}]"
    )
