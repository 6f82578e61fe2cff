"""Sensitive-attribute groups of the evaluated stays, and which groups a fairness gap is computed over."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from mmfair.core.errors import InputFileError
from mmfair.core.evaluation.run_folder import presence

#: The group (and scenario level) given to an empty attribute value; written in the ``group`` column of
#: the results, so renaming it changes results rows.
MISSING_GROUP = "unknown"
#: Separator of an intersection of two attributes (``race_group*gender``) and of its group values.
INTERSECTION = "*"
#: Attribute computed from ``present_cxr`` when the predictions have no ``has_cxr`` column.
HAS_CXR = "has_cxr"

MISSING_ATTRIBUTE = "{0}: sensitive attribute column '{1}' is missing"


def _one_attribute(pred: pd.DataFrame, attribute: str, source: object) -> np.ndarray:
    if attribute not in pred.columns and attribute == HAS_CXR:
        return presence(pred, "cxr", source).astype(int).astype(str).astype(object)
    if attribute not in pred.columns:
        raise InputFileError(MISSING_ATTRIBUTE.format(source, attribute))
    col = pred[attribute]
    return np.asarray([MISSING_GROUP if pd.isna(v) or str(v) == "" else _plain(v) for v in col], dtype=object)


def _plain(v: object) -> str:
    """A group value as text; ``1.0`` read from a CSV column with gaps is ``1``."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def group_labels(pred: pd.DataFrame, attribute: str, source: object) -> np.ndarray:
    """Group of each stay for an attribute or an intersection ``a*b`` (groups ``A*B``); empty → ``unknown``."""
    parts = attribute.split(INTERSECTION)
    labels = [_one_attribute(pred, a, source) for a in parts]
    if len(labels) == 1:
        return labels[0]
    return np.asarray([INTERSECTION.join(t) for t in zip(*labels)], dtype=object)


def gap_groups(groups: Sequence[str], n_of: dict, pos_of: dict, min_group_size: int) -> list[str]:
    """The groups a fairness gap is computed over: those with ``n``, ``n_pos`` and ``n − n_pos`` all at least
    ``min_group_size`` — exactly the cells the small-cell rule (DESIGN §3.4) does not suppress on its own
    account. Groups hidden only as *complementary* cells are large enough and stay in. With
    ``min_group_size=1`` this is every group with both classes."""
    return [g for g in groups if min(n_of[g], pos_of[g], n_of[g] - pos_of[g]) >= min_group_size]
