"""kill -9 at a random moment, rerun, same outputs (issue 16): each of ``prep``, ``train``, ``eval-missing`` and
``eval-fair`` runs as a real subprocess on a small synthetic workspace, its whole process group (pool workers
included) is killed after a seeded, uniform delay inside the command's uninterrupted duration, the command is
rerun to completion, and every output file must equal the uninterrupted reference run's: results tables row
for row (unique keys, timing metrics excluded), run folders, the data store (HDF5 datasets and attributes by
content), with no temporary or staging file left behind."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mmfair.core.config import SyntheticConfig
from mmfair.core.evaluation.tidy import KEY_COLUMNS, read_results
from mmfair.core.synthetic import generate_source

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="process groups, SIGKILL")]

SEED = 16
COMMANDS = ("prep", "train", "eval-missing", "eval-fair")
#: 20 trials; prep (its CXR encoder dominates) costs the most per trial, so it gets fewer
TRIALS = {"prep": 4, "train": 6, "eval-missing": 5, "eval-fair": 5}
#: wall-clock measurements: they differ between any two runs, interrupted or not (tidy.py HIGHER_IS_BETTER)
TIMING_METRICS = {"train_seconds", "peak_memory_mb", "infer_stays_per_s"}
#: run config.json fields measured while training, and the provenance's creation time
TIMING_CONFIG = {"train_seconds", "peak_memory_mb"}
#: history.csv columns of per-epoch wall time and memory
TIMING_HISTORY = {"seconds", "peak_memory_mb"}
#: the CXR embedding's attributes that time the encoder stage (everything else about it must match)
TIMING_H5_ATTRS = {"seconds", "train_images_per_s"}
LEFTOVER = re.compile(r"\.tmp$|\.partial|\.old-|^checkpoint\.pt$")

SYNTHETIC = SyntheticConfig(n_stays=200, seed=0, n_encoder_subjects=200, max_image_size=64, min_image_size=48)
PREP = {"image_size": 32, "encoder_image_size": 32, "encoder_max_steps": 4, "encoder_max_images": 400,
        "workers": 2, "source_label": "synthetic"}  # fmt: skip
ARGS = {
    "train": ["train", "-f", "ehr", "-f", "late", "--epochs", "8", "--patience", "8", "--hidden-dim", "16",
              "--batch-size", "32", "--bootstrap", "20", "--device", "cpu"],
    "eval-missing": ["eval-missing", "--rate", "0.5", "--rate", "1.0", "--draws", "2", "--bootstrap", "20",
                     "--device", "cpu"],
    "eval-fair": ["eval-fair", "-a", "gender", "--bootstrap", "20", "--permutations", "20", "--device", "cpu"],
}  # fmt: skip


def command(ws: Path, name: str, inputs: Path) -> list[str]:
    args = ARGS.get(name) or ["prep", "--mimic-root", str(inputs / "src" / "mimiciv" / "2.2"),
                              "--cxr-root", str(inputs / "src" / "mimic-cxr-jpg" / "2.0.0"),
                              "-c", str(inputs / "prep.yaml")]
    return [sys.executable, "-m", "mmfair", "--workspace", str(ws), *args]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # its own session: killpg reaches the image pool and any other child
        return subprocess.Popen(cmd, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})


def run_to_end(cmd: list[str], log: Path) -> float:
    began = time.perf_counter()
    proc = start(cmd, log)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    return time.perf_counter() - began


def kill_after(cmd: list[str], log: Path, delay: float) -> bool:
    """Start ``cmd`` and SIGKILL its process group after ``delay`` seconds; False if it had already finished."""
    proc = start(cmd, log)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


# --- what a workspace holds, by content ------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _results(path: Path) -> str:
    frame = read_results(path)
    dup = frame.duplicated(list(KEY_COLUMNS), keep=False)
    assert not dup.any(), f"{path}: duplicated result keys:\n{frame[dup].head()}"
    frame = frame[~frame["metric"].isin(TIMING_METRICS)]
    return frame.sort_values(list(KEY_COLUMNS)).to_csv(index=False)


def _h5(path: Path) -> str:
    """Every dataset's dtype, shape and bytes and every attribute, by name (the file's own bytes carry HDF5
    bookkeeping such as object addresses that a rewrite may lay out differently)."""
    parts = []
    with h5py.File(path, "r") as f:
        def visit(name: str, obj) -> None:
            attrs = {k: str(v) for k, v in obj.attrs.items() if k not in TIMING_H5_ATTRS}
            body = "group"
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                raw = repr(data.tolist()).encode() if data.dtype.kind == "O" else np.ascontiguousarray(data).tobytes()
                body = f"{obj.dtype}{obj.shape} {_digest(raw)}"
            parts.append(f"{name} {body} {json.dumps(attrs, sort_keys=True)}")
        parts.append(json.dumps({k: str(v) for k, v in f.attrs.items()}, sort_keys=True))
        f.visititems(visit)
    return "\n".join(parts)


def _torch_file(path: Path) -> str:
    """torch.save's zip names its records after the file it was written to (the temporary name), so the
    bytes differ between two identical saves; the tensors must not."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    flat: list[str] = []

    def walk(prefix: str, obj) -> None:
        if isinstance(obj, dict):
            for k in sorted(obj, key=str):
                walk(f"{prefix}/{k}", obj[k])
        elif isinstance(obj, torch.Tensor):
            flat.append(f"{prefix} {obj.dtype}{tuple(obj.shape)} {_digest(obj.contiguous().numpy().tobytes())}")
        else:
            flat.append(f"{prefix} {obj!r}")

    walk("", state)
    return "\n".join(flat)


def _json(path: Path) -> str:
    obj = json.loads(path.read_text())
    if path.parent.parent.name == "runs" and path.name == "config.json":
        for key in TIMING_CONFIG:
            obj.pop(key, None)
        obj.get("provenance", {}).pop("created_utc", None)  # when the run finished: a clock reading
    if path.name == "prep.json":
        obj.pop("stage_seconds", None)  # wall time per prep stage
    return json.dumps(obj, sort_keys=True, indent=1)


def _csv(path: Path) -> str:
    if path.name == "history.csv":
        frame = pd.read_csv(path)
        return frame.drop(columns=[c for c in TIMING_HISTORY if c in frame.columns]).to_csv(index=False)
    return path.read_text()


def content(ws: Path) -> dict[str, str]:
    """Relative path -> a comparable rendering of every file the commands write (the workspace's logs aside)."""
    out = {}
    for path in sorted(p for p in ws.rglob("*") if p.is_file()):
        rel = path.relative_to(ws).as_posix()
        if path.parent.name == "results" and path.suffix == ".csv":
            out[rel] = _results(path)
        elif path.suffix == ".h5":
            out[rel] = _h5(path)
        elif path.suffix == ".pt":
            out[rel] = _torch_file(path)
        elif path.suffix == ".json":
            out[rel] = _json(path)
        elif path.suffix == ".csv":
            out[rel] = _csv(path)
        else:
            out[rel] = _digest(path.read_bytes())
    return out


def assert_same(got: dict[str, str], want: dict[str, str], label: str) -> None:
    assert sorted(got) == sorted(want), f"{label}: files differ: extra {sorted(set(got) - set(want))}, " \
                                        f"missing {sorted(set(want) - set(got))}"
    for rel in want:
        if got[rel] != want[rel]:
            diff = [(a, b) for a, b in zip(got[rel].splitlines(), want[rel].splitlines()) if a != b][:3]
            pytest.fail(f"{label}: {rel} differs from the uninterrupted run; first differing lines "
                        f"(got, want): {diff}")


# --- the reference chain and the trials -------------------------------------------------------------------


class Chain:
    """The uninterrupted chain prep → train → eval-missing → eval-fair in one workspace, run as far as a test
    needs it: a snapshot of the workspace before and after each command, each command's duration."""

    def __init__(self, root: Path) -> None:
        self.root, self.ws = root, root / "ref"
        generate_source(SYNTHETIC, root / "src")
        (root / "prep.yaml").write_text(yaml.safe_dump(PREP))
        self.ws.mkdir()
        self.before = {"prep": root / "snap-empty"}
        shutil.copytree(self.ws, self.before["prep"])
        self.seconds: dict[str, float] = {}
        self.content: dict[str, dict[str, str]] = {}

    def through(self, name: str) -> "Chain":
        for step in COMMANDS[: COMMANDS.index(name) + 1]:
            if step in self.seconds:
                continue
            self.seconds[step] = run_to_end(command(self.ws, step, self.root), self.root / f"ref-{step}.log")
            after = self.root / f"snap-{step}"
            shutil.copytree(self.ws, after)
            self.content[step] = content(after)
            if step != COMMANDS[-1]:
                self.before[COMMANDS[COMMANDS.index(step) + 1]] = after
        return self


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Chain:
    return Chain(tmp_path_factory.mktemp("fault"))


def _trials() -> list[tuple[str, int]]:
    return [(name, k) for name in COMMANDS for k in range(TRIALS[name])]


@pytest.mark.parametrize("name, k", _trials(), ids=[f"{n}-{k}" for n, k in _trials()])
def test_kill_and_rerun_gives_the_uninterrupted_outputs(reference, tmp_path, name, k):
    chain = reference.through(name)
    delay = random.Random(f"{SEED}-{name}-{k}").uniform(0.0, chain.seconds[name])
    ws = tmp_path / "ws"
    shutil.copytree(chain.before[name], ws)
    cmd, log = command(ws, name, chain.root), tmp_path / "command.log"
    killed = kill_after(cmd, log, delay)
    print(f"{name} trial {k}: killed={killed} after {delay:.1f}s of {chain.seconds[name]:.1f}s")
    run_to_end(cmd, log)
    leftovers = [p.relative_to(ws).as_posix() for p in ws.rglob("*") if LEFTOVER.search(p.name)]
    assert leftovers == [], f"left behind after the rerun: {leftovers}"
    assert_same(content(ws), chain.content[name], f"{name} killed after {delay:.1f}s")


def test_the_trials_are_twenty_and_cover_every_command():
    assert sum(TRIALS.values()) == 20 and set(TRIALS) == set(COMMANDS)
