"""The training and evaluation protocol version every run identity and results row carries.

A run folder marked ``DONE`` is reused only when it was trained under the same protocol, so a change to what
training or evaluation *does* (not to how fast it does it) must bump :data:`PROTOCOL_VERSION` in the same
commit, with a line below saying what changed. Runs and rows from an older protocol are retrained or
re-evaluated, never served as current.

History:

* 1 — the protocol of mmfair 0.1.0 before this field existed (results rows migrated from schema 1 say 1).
* 2 — gradient modulators scale learning rates under the base optimizer by default; MultiFair's gate reads
  pooled group statistics; the CXR encoder stops on steps, not seconds; labs count only when stored inside the
  window; the temporal split follows each stay's estimated year; one stratified CXR-removal rule for training
  and evaluation; comparisons on common stays; small cells suppressed everywhere; run identity covers the
  content of the embeddings, cohort, EHR values (and in images mode images and encoder weights) it was trained
  on, and a damaged checkpoint restarts the run; prep's reuse key reads the input tables' content; the
  val-spec-X rule over tied scores flags nobody (it raised). Evaluation: a row is defined only when the method
  scores every evaluated stay (no 50 % coverage rule); clean rows on all stays and on stays with a CXR;
  MCAR rows are test_cohort matched with pooled-draw intervals and the realised removal; r*'s comparator
  chosen on validation; selection rules ignore validation groups below 10 stays/positives/negatives; the
  AUROC permutation test swaps ranks; 1,000 bootstrap replicates and 5 removal draws by default.
* 3 — a missing attribute value is one group, ``unknown``, in training (group-aware modulators, their history
  columns) as in evaluation (it was ``(missing)`` in training); the run identity holds every TrainConfig field
  but the machine ones (fields at the default values they had before they existed were left out), so every
  earlier run id changes and earlier runs are retrained; images mode trains at the side of the store's images
  (``prep --image-size``; it fell back to the encoder's 128 px), and an explicit ``--image-size`` that differs
  is refused.
"""

from __future__ import annotations

PROTOCOL_VERSION: int = 3
