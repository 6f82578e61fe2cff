"""``mmfair study``: a whole benchmark grid in one resumable command (a layer above training and evaluation).

:mod:`.spec` the study file and presets; :mod:`.space` the search spaces; :mod:`.jobs` the deterministic job
list; :mod:`.tuning` equal-budget Optuna tuning on validation; :mod:`.runner` the phases and status;
:mod:`.backends` where jobs run (``local``, ``slurm``).
"""

from mmfair.core.study.spec import StudySpec, load_study, parse_study, preset_names, preset_summaries

__all__ = ["StudySpec", "load_study", "parse_study", "preset_names", "preset_summaries"]
