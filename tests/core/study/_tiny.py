"""The tiny workspace of the training tests (tests/core/training/conftest.py), loaded by path."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_mmfair_training_conftest",
                                               Path(__file__).resolve().parents[1] / "training" / "tiny_workspace.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
build_tiny_workspace = _module.build_tiny_workspace

#: a study small enough for the fast suite (two methods, tiny training)
TINY_STUDY = {
    "name": "tiny",
    "methods": ["ehr", "late"],
    "tasks": ["mortality"],
    "folds": [0],
    "seeds": [0, 1],
    "train": {"epochs": 2, "patience": 1, "batch_size": 64, "hidden_dim": 16},
    "tuning": {"trials": 2, "startup_trials": 1, "generic": ["lr", "dropout"]},
    "bootstrap": 20,
}
