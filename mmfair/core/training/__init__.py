"""Tasks, fold data + scaling, the trainer loop, run folders and ``predict`` (DESIGN §3.3, §5, §6)."""

from mmfair.core.training import tasks as _tasks  # noqa: F401  (registers the tasks)
from mmfair.core.training.runs import LoadedRun, RunResult, compute_run_id, load_run, predict, train_run

__all__ = ["LoadedRun", "RunResult", "compute_run_id", "load_run", "predict", "train_run"]
