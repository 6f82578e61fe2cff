"""Labs count only when their result was stored inside the observation window (DESIGN §3.2), binned at charttime;
a lab row without a storetime is judged by its charttime alone, and prep says how many there were."""

import gzip
import json
import logging

import h5py
import numpy as np
import pytest

from mmfair.core.config import PrepConfig
from mmfair.core.data.prep import run_prep
from mmfair.core.workspace import Workspace

# stay 30000001 (subject 10000001): window [2150-01-01 10:00, 2150-01-03 10:00); glucose = lab itemid 50931
EXTRA_LABS = [  # (charttime, storetime, value)
    ("2150-01-03 09:00:00", "2150-01-03 10:30:00", 999),   # hour 47, stored 30 min after the window: excluded
    ("2150-01-03 08:00:00", "2150-01-03 09:59:00", 140),   # hour 46, stored just inside: used
    ("2150-01-03 07:10:00", "2150-01-03 07:30:00", 150),   # hour 45: the earlier draw ...
    ("2150-01-03 07:50:00", "2150-01-03 10:05:00", 300),   # ... wins, its later draw being stored too late
    ("2150-01-02 10:20:00", "", 120),                      # hour 24, no storetime: charttime alone
]


@pytest.fixture
def prepped_with_late_labs(tree, tmp_path, caplog):
    path = tree[0] / "hosp" / "labevents.csv.gz"
    with gzip.open(path, "rt") as fh:
        text = fh.read()
    rows = [f"{800 + i},10000001,,{700 + i},50931,,{ct},{st},{v},{v},,,,,ROUTINE," for i, (ct, st, v) in
            enumerate(EXTRA_LABS)]
    with gzip.open(path, "wt") as fh:
        fh.write(text + "\n".join(rows) + "\n")
    ws = Workspace.resolve(tmp_path / "ws")
    with caplog.at_level(logging.INFO):
        run_prep(PrepConfig(mimic_root=tree[0], cxr_root=tree[1], skip_encoder=True, workers=1), ws)
    with h5py.File(ws.features_h5, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["ehr/feature_names"][:]]
        glucose = f["ehr/values"][0, :, names.index("glucose")]
    return ws, glucose, caplog


def test_lab_stored_after_the_window_is_not_used(prepped_with_late_labs):
    _, glucose, _ = prepped_with_late_labs
    assert np.isnan(glucose[47])
    assert glucose[46] == 140
    assert glucose[45] == 150
    assert glucose[24] == 120
    assert glucose[2] == 180     # the tree's own lab (stored 20 min after charting) is unchanged


def test_prep_reports_late_and_storetime_less_labs(prepped_with_late_labs):
    ws, _, caplog = prepped_with_late_labs
    labs = json.loads((ws.data / "prep.json").read_text())["labs"]
    # the tree's standard-map labs inside windows: 4 (glucose 180 and 200, pH 7.35, SaO2 93); + the 5 above
    assert (labs["observations_in_window"], labs["stored_after_window"], labs["without_storetime"]) == (9, 2, 1)
    warnings = [r.getMessage() for r in caplog.get_records("setup") if r.levelno == logging.WARNING]
    assert any("1 of 9 lab observations" in m and "no storetime" in m for m in warnings)
