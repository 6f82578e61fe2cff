"""A study's ``stores:`` (prep-level axes): validated when the study file loads; each store prepared once in
its own workspace with the main workspace's prep settings plus its overrides; the grid runs in each store and
its results stay there; a store whose prep fails is recorded and the others go on; without ``stores:`` the
job keys are the ones of a study that never had the field."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from _tiny import TINY_STUDY
from mmfair.cli.app import app
from mmfair.core import pipeline
from mmfair.core.config import PrepConfig, SyntheticConfig
from mmfair.core.errors import ConfigError
from mmfair.core.evaluation.tidy import read_results
from mmfair.core.study import load_study, parse_study
from mmfair.core.study.backends import BACKENDS
from mmfair.core.study.jobs import final_jobs, tune_jobs, units
from mmfair.core.study.runner import run_study, study_status
from mmfair.core.study.state import StudyDir
from mmfair.core.study.stores import store_workspace
from mmfair.core.workspace import Workspace

#: a synthetic source and prep small enough for the fast suite (random-init encoder, 32-px images)
SYNTHETIC = SyntheticConfig(n_stays=150, n_encoder_subjects=20, max_image_size=64, min_image_size=32)
PREP = PrepConfig(image_size=32, encoder_image_size=32, encoder_max_steps=2, encoder_max_epochs=1, workers=1,
                  encoder_threads=1)
STUDY = {"name": "stores", "methods": ["ehr", "late"], "folds": [0], "seeds": [0],
         "train": {"epochs": 2, "patience": 1, "batch_size": 64, "hidden_dim": 16}, "bootstrap": 20,
         "stores": {"w24": {"window_hours": 24}, "w48": None}}


def _load(tmp_path, stores) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "methods": ["late"], "stores": stores}))
    load_study(path)


@pytest.mark.parametrize("stores, named", [
    ({"w24": {"window_hour": 24}}, r"store 'w24': unknown prep setting 'window_hour'"),
    ({"w24": {"window_hours": 0}}, r"store 'w24': window_hours: "),
    ({"mine": {"mimic_root": "/data/mimic"}}, r"store 'mine': mimic_root cannot be overridden"),
    ({"../up": {}}, r"'\.\./up' is not a store name"),
])
def test_bad_store_is_one_named_line(tmp_path, stores, named):
    with pytest.raises(ConfigError, match=named) as info:
        _load(tmp_path, stores)
    assert "\n" not in str(info.value) and "s.yaml: stores: " in str(info.value)


def test_without_stores_the_job_keys_are_unchanged():
    plain = parse_study(TINY_STUDY)
    with_stores = {**TINY_STUDY, "stores": {"w24": {"window_hours": 24}}}
    for other in (parse_study({**TINY_STUDY, "stores": {}}), parse_study(with_stores)):
        assert [u.key for u in units(other)] == [u.key for u in units(plain)]
        assert [j.key for j in tune_jobs(other)] == [j.key for j in tune_jobs(plain)]
        chosen = {u.key: u.base for u in units(plain)}
        assert [j.key for j in final_jobs(other, chosen)] == [j.key for j in final_jobs(plain, chosen)]
    assert parse_study(TINY_STUDY).stores == {}


@pytest.fixture(scope="module")
def synthetic_ws(tmp_path_factory) -> Workspace:
    ws = Workspace.resolve(tmp_path_factory.mktemp("stores") / "ws")
    pipeline.prep(PREP, ws, synthetic=SYNTHETIC)
    return ws


def _run_ids(ws: Workspace) -> set[str]:
    return {s["run_id"] for s in StudyDir.of(ws, STUDY["name"]).all_states().values() if s.get("kind") == "train"}


def test_two_stores_end_to_end_and_rerun_reuses(synthetic_ws, tmp_path):
    ws = synthetic_ws
    spec = parse_study(STUDY)
    outcome = run_study(spec, ws, BACKENDS.get("local").from_options(jobs=1), device="cpu")
    assert (outcome.done, outcome.failed, outcome.unfinished) == (2 * (1 + 2), 0, 0), outcome.failures
    assert set(outcome.stores) == {"w24", "w48"}
    assert not ws.metrics_csv.exists()  # the main workspace's results are untouched
    stamps, ids = {}, {}
    for name, hours in (("w24", 24), ("w48", 48)):
        store = store_workspace(ws, name)
        assert json.loads((store.data / "prep.json").read_text())["config"]["window_hours"] == hours
        ids[name] = _run_ids(store)
        assert len(ids[name]) == 2 and all((store.runs / r / "DONE").exists() for r in ids[name])
        assert set(read_results(store.metrics_csv)["run_id"]) == ids[name]
        stamps[name] = (store.features_h5.stat().st_mtime_ns, sorted(p.name for p in store.runs.iterdir()))
    assert not ids["w24"] & ids["w48"]  # the run id carries the store's fingerprint

    again = run_study(spec, ws, BACKENDS.get("local").from_options(jobs=1), device="cpu")
    assert (again.done, again.failed, again.unfinished) == (outcome.done, 0, 0)
    for name in ("w24", "w48"):
        store = store_workspace(ws, name)
        assert (store.features_h5.stat().st_mtime_ns, sorted(p.name for p in store.runs.iterdir())) == stamps[name]
        assert StudyDir.of(ws, STUDY["name"]).read(f"prep-{name}")["reused"] is True

    status = study_status(spec, ws)
    assert list(status["table"].columns[:2]) == ["store", "method"]
    assert set(status["table"]["store"]) == {"w24", "w48"} and status["done"] == status["total"] == 6
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    shown = CliRunner().invoke(app, ["--workspace", str(ws.root), "study", "status", str(path)])
    assert shown.exit_code == 0 and "w24" in shown.output and "(prep)" in shown.output


def test_a_failing_store_is_recorded_and_the_others_go_on(synthetic_ws, tmp_path):
    study = {**STUDY, "name": "bad-store", "methods": ["ehr"],
             "stores": {"w72": {"window_hours": 72}, "w48": {}}}  # min_stay_hours 48 < 72: refused by prep
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    result = CliRunner().invoke(app, ["--workspace", str(synthetic_ws.root), "study", "run", str(path),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "failed: store w72: prep: " in result.output and "min_stay_hours" in result.output
    assert "store w48: results in" in result.output and "store w72: results" not in result.output
    record = StudyDir.of(synthetic_ws, "bad-store").read("prep-w72")
    assert record["state"] == "failed" and "\n" not in record["error"]
    assert not store_workspace(synthetic_ws, "w72").data.exists()


def test_a_store_being_prepared_elsewhere_is_waited_for(synthetic_ws):
    """Two `study run` processes starting at once: the second waits on the store's prep lock, then reuses it."""
    import threading

    from filelock import FileLock

    from mmfair.core.study.stores import prepare_store

    spec = parse_study({**STUDY, "name": "waits", "stores": {"w48": {}}})
    store = store_workspace(synthetic_ws, "w48")
    store.root.mkdir(parents=True, exist_ok=True)
    ready: list[bool] = []
    with FileLock(str(store.root / "prep.lock")):
        worker = threading.Thread(target=lambda: ready.append(prepare_store(spec, synthetic_ws, "w48")))
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive() and not ready  # held here: the other process is still preparing
    worker.join(timeout=60)
    assert ready == [True] and StudyDir.of(synthetic_ws, "waits").read("prep-w48")["state"] == "done"
