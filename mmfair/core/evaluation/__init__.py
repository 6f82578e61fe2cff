"""The evaluators (clean, missing-modality scenarios, fairness) over one shared scoring core and one
patient-level bootstrap.

Public surface::

    evaluate_clean(run_dirs, *, bootstrap=1000, seed=0)          # clean test metrics (+ cost rows)   .clean
    evaluate_missing(run_dirs, EvalMissingConfig, predict_fn)    # missing-modality scenarios        .missing
    evaluate_fairness(run_dirs, EvalFairConfig)                  # per-group metrics and gaps        .fair
    upsert_results(path, rows)                                   # idempotent write of tidy rows     .tidy
    TIDY_COLUMNS                                                 # the schema of DESIGN §3.4

Shared by the three: :mod:`.scoring` (coverage rule, metric rows), :mod:`.groups` (attribute groups, the
groups a gap uses), :mod:`.run_folder` (reading finished run folders).
"""

from mmfair.core.evaluation.clean import evaluate_clean
from mmfair.core.evaluation.fair import evaluate_fairness
from mmfair.core.evaluation.missing import evaluate_missing
from mmfair.core.evaluation.scoring import ON_ALL, ON_COMMON, ON_CXR
from mmfair.core.evaluation.tidy import HIGHER_IS_BETTER, KEY_COLUMNS, TIDY_COLUMNS, read_results, upsert_results

_core = ["evaluate_clean", "evaluate_missing", "evaluate_fairness"]
_tidy = ["upsert_results", "read_results", "TIDY_COLUMNS", "KEY_COLUMNS", "HIGHER_IS_BETTER"]
_constants = ["ON_ALL", "ON_CXR", "ON_COMMON"]

__all__ = _core + _tidy + _constants
