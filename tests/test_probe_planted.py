"""The demographic-encoding probe on planted truth (slow; issue 17).

Two synthetic sources from the same seed, with EVERY demographic link of the generator switched off (race-group
base rates, race-group CXR acquisition, the SpO2 bias, race-group label noise, the year-dependent CXR
acquisition, and the age and sex effects on the latents): same stays, same labels. One also draws sex, age and
race group into the chest X-rays (``SyntheticConfig.image_demographic_signal``: breast shadows, bone density
falling with age, a soft-tissue density per race group). ``late`` fusion is trained on fold 0 of each, and the
probe (:mod:`mmfair.core.evaluation.probe`) is run on its CXR, EHR and fused representations.

* With the signal, the CXR embedding must reveal each attribute: the lower end of the probe AUROC's interval
  above 0.5.
* Without it, nothing may be found anywhere: every interval covers 0.5.

Several intervals are read at once (3 with the signal, up to 9 without), so each is a Bonferroni-widened
percentile interval of the patient-level bootstrap (level 1 − 0.05 / number of intervals, 4,000 replicates):
at 95 % each, one of nine null intervals would miss 0.5 by chance in about a third of seeds.

Measured (``MMFAIR_PROBE_WORKSPACE=/tmp/probe_fast pytest -m slow -s tests/test_probe_planted.py``, 2,000 stays,
fold 0; both tests 25 min 49 s on 2 cores shared with other jobs): with the signal, CXR probe AUROC gender
0.715 [0.634, 0.796], age group 0.687 [0.615, 0.752], race group 0.601 [0.520, 0.690] (n = 230, 230, 223 test
stays with a CXR), while the EHR (0.46–0.49) and late fusion's fused representation (0.50–0.55) stay at chance;
without it every one of the nine probes lies in 0.46–0.53 with an interval covering 0.5.

Set ``MMFAIR_PROBE_WORKSPACE`` to a folder to keep the two workspaces between runs (prep and training are
skipped when their outputs exist).
"""

import os
from pathlib import Path

import numpy as np
import pytest

from mmfair.core import pipeline
from mmfair.core.config import EvalFairConfig, PrepConfig, SyntheticConfig, TrainConfig
from mmfair.core.evaluation.probe import probe_run
from mmfair.core.training import load_run
from mmfair.core.workspace import Workspace

pytestmark = pytest.mark.slow

N_STAYS = 2000
EVERY_LINK_OFF = dict(group_base_rates=False, group_missingness=False, spo2_bias=False, group_label_noise=False,
                      year_acquisition=False, age_sex_latents=False)
PROBE = EvalFairConfig(bootstrap=4000, seed=0, min_group_size=10)
# a small CXR encoder stage (64 px, 100 steps) keeps each workspace to minutes on 2 cores; the marks are large
PREP = PrepConfig(image_size=64, encoder_image_size=64, encoder_max_steps=100, encoder_max_images=1500)


def _probe(root: Path, signal: bool) -> dict[tuple[str, str], tuple[float, float, float]]:
    ws = Workspace.resolve(root / ("signal" if signal else "null"))
    synthetic = SyntheticConfig(n_stays=N_STAYS, seed=0, image_demographic_signal=signal, max_image_size=256,
                                min_image_size=192, **EVERY_LINK_OFF)
    pipeline.prep(PREP, ws, synthetic=synthetic)
    run = pipeline.train([TrainConfig(fusion="late", task="mortality", fold=0, device="cpu")], ws, bootstrap=0).runs[0]
    results = probe_run(load_run(run.run_dir, device="cpu"), PROBE)
    return {(r.representation, r.attribute): (r.scores["value"], r.scores["replicates"], r.scores["n"])
            for r in results}


def _interval(replicates: np.ndarray, n_intervals: int) -> tuple[float, float]:
    alpha = 0.05 / n_intervals
    finite = replicates[np.isfinite(replicates)]
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return Path(os.environ.get("MMFAIR_PROBE_WORKSPACE") or tmp_path_factory.mktemp("probe"))


def _show(title: str, probes: dict, n_intervals: int) -> None:
    print(f"\n{title} (intervals at 1 - 0.05/{n_intervals})")
    for (representation, attribute), (value, replicates, n) in sorted(probes.items()):
        low, high = _interval(replicates, n_intervals)
        print(f"  {representation:5s} {attribute:10s} {value:.3f} [{low:.3f}, {high:.3f}]  n={n}")


def test_the_planted_image_signal_is_recovered(root):
    probes = _probe(root, signal=True)
    cxr = {k: v for k, v in probes.items() if k[0] == "cxr"}
    _show("signal in the images", probes, len(cxr))
    assert {a for _, a in cxr} == {"gender", "age_group", "race_group"}
    for (_, attribute), (value, replicates, _) in cxr.items():
        assert _interval(replicates, len(cxr))[0] > 0.5, attribute


def test_nothing_is_found_without_any_demographic_link(root):
    probes = _probe(root, signal=False)
    _show("every demographic link off", probes, len(probes))
    assert {r for r, _ in probes} == {"cxr", "ehr", "fused"}
    for key, (value, replicates, _) in probes.items():
        low, high = _interval(replicates, len(probes))
        assert low < 0.5 < high, key
