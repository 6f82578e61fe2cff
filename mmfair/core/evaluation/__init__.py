"""ONE evaluation core (scenario × attribute × metric, one patient-level bootstrap) for both eval commands.

Public surface::

    evaluate_clean(run_dirs, *, bootstrap=1000, seed=0)          # clean test metrics (+ cost rows)
    evaluate_missing(run_dirs, EvalMissingConfig, predict_fn)    # missing-CXR scenarios
    evaluate_fairness(run_dirs, EvalFairConfig)                  # per-group metrics and gaps
    upsert_results(path, rows)                                   # idempotent write of tidy rows
    TIDY_COLUMNS                                                 # the schema of DESIGN §3.4
"""

from mmfair.core.evaluation.core import ON_ALL, ON_COMMON, ON_CXR, evaluate_clean, evaluate_fairness, evaluate_missing
from mmfair.core.evaluation.tidy import HIGHER_IS_BETTER, KEY_COLUMNS, TIDY_COLUMNS, read_results, upsert_results

_core = ["evaluate_clean", "evaluate_missing", "evaluate_fairness"]
_tidy = ["upsert_results", "read_results", "TIDY_COLUMNS", "KEY_COLUMNS", "HIGHER_IS_BETTER"]
_constants = ["ON_ALL", "ON_CXR", "ON_COMMON"]

__all__ = _core + _tidy + _constants
