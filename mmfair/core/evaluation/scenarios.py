"""Test-time missing-modality scenarios.

``mcar`` (missing completely at random, stratified on the label): among the stays that *have* the
modality, remove it from exactly ``round(rate × n)`` of them (half rounds up), and remove the same
share from each label stratum. Stratum quotas are ``rate × n_stratum`` rounded down; the stays still
owed to reach the exact total go to the strata with the largest remainders (ties broken by the draw's
random generator). Which stays are removed is a pure function of ``draw_seed``.

Phenotype runs stratify on the first phenotype label (the 25 labels cannot all be strata at once, and
any stratum choice keeps the removal independent of the scores); the choice is recorded in
``scenario_params`` as ``stratified_on``.
"""

from __future__ import annotations

import math

import numpy as np

from mmfair.core.registry import SCENARIOS

_RATE_RANGE = "a missing rate must lie in [0, 1], got {0}"
_LENGTHS = "present has {0} rows but strata has {1}"


def draw_seed(seed: int, rate: float, draw: int) -> int:
    """The seed of one draw, derived from the config seed, the requested rate and the draw number.

    Identical inputs give identical seeds, so a draw is reproducible and shared by every run that is
    evaluated on the same test stays (paired comparisons).
    """
    rate_key = int(round(float(rate) * 1_000_000))
    state = np.random.SeedSequence([int(seed), rate_key, int(draw)]).generate_state(1, dtype=np.uint32)
    return int(state[0])


def n_to_remove(rate: float, n: int) -> int:
    """``round(rate × n)`` with halves rounded up (not Python's round-half-to-even)."""
    return int(math.floor(rate * n + 0.5 + 1e-9))


def stratified_removal(present, strata, rate: float, seed: int) -> np.ndarray:
    """Keep-mask after removing the modality from ``round(rate × n_present)`` stays, stratified.

    Parameters
    ----------
    present : array-like of bool, shape (n,)
        Whether the stay has the modality naturally; only these can lose it.
    strata : array-like, shape (n,)
        The stratum of each stay (the label).
    rate : float in [0, 1]
        Requested share of the present stays to remove.
    seed : int
        Seed of the draw (see :func:`draw_seed`).

    Returns
    -------
    ndarray of bool, shape (n,)
        False for a removed stay, True otherwise (stays without the modality stay True: they have
        nothing to remove and the prediction code ANDs the mask with natural presence).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(_RATE_RANGE.format(rate))
    present = np.asarray(present, dtype=bool).ravel()
    strata = np.asarray(strata).ravel()
    if strata.shape != present.shape:
        raise ValueError(_LENGTHS.format(present.size, strata.size))
    keep = np.ones(present.size, dtype=bool)
    eligible = np.flatnonzero(present)
    total = n_to_remove(rate, eligible.size)
    if total == 0:
        return keep
    rng = np.random.default_rng(seed)
    values, codes = np.unique(strata[eligible].astype(str), return_inverse=True)
    sizes = np.bincount(codes, minlength=values.size)
    quota = rate * sizes
    base = np.minimum(np.floor(quota + 1e-9).astype(int), sizes)
    owed = total - int(base.sum())
    if owed > 0:
        fraction = quota - base
        fraction[base >= sizes] = -1.0  # a full stratum cannot give more
        tie_break = rng.permutation(values.size)
        order = np.lexsort((tie_break, -fraction))
        base[order[:owed]] += 1
    for k in range(values.size):
        members = eligible[codes == k]
        removed = rng.choice(members, size=int(base[k]), replace=False)
        keep[removed] = False
    return keep


if "mcar" not in SCENARIOS:
    SCENARIOS.register(
        "mcar", summary="remove the modality from a label-stratified random share of the stays that have it"
    )(stratified_removal)
