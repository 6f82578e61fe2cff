"""The small-cell rule (DESIGN §3.4), enforced before anything is rendered.

A subgroup cell is **suppressed** when any of ``n``, ``n_pos`` or ``n − n_pos`` is below
``min_group_size``. **Complementary suppression:** within one block (a run's groups of one attribute for
one label), if exactly one group is suppressed, the smallest remaining group (by ``n``, ties by name) is
suppressed too, so the small group's counts cannot be recovered as the total minus the other groups.
With two or more suppressed groups the blocks' totals no longer isolate any one of them.

A group with an unknown count (``n`` empty) is suppressed: nothing is shown that cannot be checked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The marker shown instead of a suppressed value; ``{k}`` is the minimum group size.
SUPPRESSED_MARKER = "<{k}"


def marker(min_group_size: int) -> str:
    return SUPPRESSED_MARKER.format(k=min_group_size)


def is_small(n, n_pos, min_group_size: int) -> np.ndarray:
    """Primary rule: True where ``n``, ``n_pos`` or ``n − n_pos`` is below ``min_group_size`` (or unknown)."""
    n = pd.to_numeric(pd.Series(n), errors="coerce").to_numpy(dtype=float)
    n_pos = pd.to_numeric(pd.Series(n_pos), errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        small = (n < min_group_size) | (n_pos < min_group_size) | ((n - n_pos) < min_group_size)
    return small | np.isnan(n) | np.isnan(n_pos)


def complementary(groups, n, suppressed) -> np.ndarray:
    """Add the complementary cell: if exactly one group of the block is suppressed, also the next-smallest."""
    groups = np.asarray(groups, dtype=object)
    n = pd.to_numeric(pd.Series(n), errors="coerce").to_numpy(dtype=float)
    out = np.asarray(suppressed, dtype=bool).copy()
    if out.sum() == 1 and out.size > 1:
        candidates = np.flatnonzero(~out)
        order = sorted(candidates, key=lambda i: (np.nan_to_num(n[i], nan=np.inf), str(groups[i])))
        out[order[0]] = True
    return out


def suppress_block(groups, n, n_pos, min_group_size: int) -> np.ndarray:
    """The primary rule followed by complementary suppression, for one block of groups."""
    return complementary(groups, n, is_small(n, n_pos, min_group_size))
