"""The workspace: every file a user produces, in named places (DESIGN §1)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKSPACE = Path("mmfair-workspace")
WORKSPACE_ENV = "MMFAIR_WORKSPACE"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, root: Path | str | None = None) -> "Workspace":
        if root is None:
            root = os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
        return cls(Path(root).expanduser().resolve())

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def cohort_csv(self) -> Path:
        return self.data / "cohort.csv"

    @property
    def features_h5(self) -> Path:
        return self.data / "features.h5"

    @property
    def metrics_csv(self) -> Path:
        return self.results / "metrics.csv"

    @property
    def missing_csv(self) -> Path:
        return self.results / "missing.csv"

    @property
    def fairness_csv(self) -> Path:
        return self.results / "fairness.csv"

    def finished_runs(self) -> list[Path]:
        if not self.runs.exists():
            return []
        return sorted(p for p in self.runs.iterdir() if (p / "DONE").exists())
