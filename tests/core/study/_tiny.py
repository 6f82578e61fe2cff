"""The tiny study of the study tests (the workspace builder is tests/core/tiny_workspace.py)."""

from tiny_workspace import build_tiny_workspace  # noqa: F401

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
