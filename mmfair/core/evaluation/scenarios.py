"""Test-time missing-modality scenarios (``eval-missing --mechanism``), registered in ``SCENARIOS``.

Every scenario works on the test stays of one run and returns, for one point of its grid and one
draw, a ``keep`` mask (False: the modality is removed from that stay; ANDed with natural presence by
the prediction code) and the ``evaluated`` mask (the stays the metrics are computed on). The row's
``missing_rate`` is the final share of evaluated stays without the modality (DESIGN §3.4).

Mechanisms
----------
``mcar`` (missing completely at random, stratified on the label)
    Among the stays that *have* the modality, remove it from exactly ``round(rate × n)`` of them (half
    rounds up), the same share from each label stratum. Stratum quotas are ``rate × n_stratum``
    rounded down; the stays still owed go to the strata with the largest remainders (ties broken by the
    draw's random generator). Evaluated: the stays that had the modality.
``group`` (structured missingness: the rate depends on a demographic attribute, ``--by``)
    ``--rates WHITE=0.1,BLACK=0.4``: within each listed group ``g``, exactly ``round(r_g × n_g)`` of
    the ``n_g`` stays of ``g`` that have the modality lose it, stratified on the label inside the group
    (as ``mcar``). Groups not listed keep the modality (rate 0) unless the key ``*`` gives a rate to
    every unlisted group. An empty attribute value is the group ``unknown``. Evaluated: the stays that
    had the modality (all groups).
``label`` (missing not at random: the rate depends on the outcome)
    ``--rates 1=0.6,0=0.2``: within each listed label value, exactly ``round(r × n)`` of its stays with
    the modality lose it. Phenotype runs use the first phenotype label (as for stratification).
``natural``
    The test fold as it is: no removal; evaluated stays = all test stays; ``missing_rate`` = the fold's
    observed share without the modality. One point, one draw, no ``draw_seed`` (nothing is random).

``ehr_group`` / ``ehr_last_hours`` / ``ehr_noise`` (EHR imperfections; always ``modality=ehr``)
    ``--rate`` is the share of test stays perturbed: exactly ``round(rate × n)`` of them, stratified on
    the label as ``mcar`` (every stay has the EHR, so all test stays are evaluated and ``missing_rate``
    is the share perturbed). The scenario hands ``predict_fn`` an :class:`EHRPerturbation` as
    ``ehr_transform``; it acts on the RAW hourly values before the observation mask, forward fill,
    training-median fill and scaling, so a removal is real absence. ``ehr_group --groups vitals,labs``
    sets every value of those variable groups to NaN; ``ehr_last_hours --hours 12`` the last 12 hours;
    ``ehr_noise --noise-sd 0.5`` adds Gaussian noise of sd 0.5 × the training-fold IQR of each variable
    to the observed values only (an imperfection that is not absence). ``scenario_params`` records
    ``perturbation`` (``group``/``last_hours``/``noise``) and ``groups``/``hours``/``sd``, so each
    perturbation setting is its own curve in the summaries. The noise draw is seeded from the draw's seed.

For ``group`` and ``label`` one ``--rates`` profile is one point of the curve; the option is repeatable
(``--rates WHITE=0.1,BLACK=0.4 --rates WHITE=0.2,BLACK=0.8``), and the all-zero profile (rate 0, the
clean reference) is always added. The curve's x axis is the row's ``missing_rate`` (the overall final
share), and ``scenario_params`` records the profile (``rates``) and the attribute (``by``).

Phenotype runs stratify on the first phenotype label (the 25 labels cannot all be strata at once, and
any stratum choice keeps the removal independent of the scores); the choice is recorded in
``scenario_params`` as ``stratified_on``.

Seeds: ``draw_seed(seed, key, draw)`` from ``SeedSequence([seed, key, draw])`` where ``key`` is the
requested rate (``mcar``, unchanged from the first version) or a stable hash of the mechanism and its
profile, so every run on a fold gets the same removals (paired comparisons).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from mmfair.core.data.variables import VARIABLE_GROUPS
from mmfair.core.errors import ConfigError
from mmfair.core.evaluation.groups import MISSING_GROUP
from mmfair.core.registry import SCENARIOS

_RATE_RANGE = "a missing rate must lie in [0, 1], got {0}"
_LENGTHS = "present has {0} rows but strata has {1}"
_UNKNOWN_LEVEL = "{source}: --rates names {what} '{level}', which no test stay has; available: {available}"
_NO_COLUMN = "{source}: --by column '{column}' is missing from the predictions"

#: Profile key giving a rate to every level not listed explicitly.
OTHERS = "*"
#: The level given to an empty attribute value (the same name as the fairness rows use).
MISSING_LEVEL = MISSING_GROUP


def draw_seed(seed: int, rate: float | str, draw: int) -> int:
    """The seed of one draw, derived from the config seed, the point of the grid and the draw number.

    ``rate`` is the requested rate (a number) or, for profile mechanisms, a text key naming the
    mechanism and its profile (hashed). Identical inputs give identical seeds, so a draw is
    reproducible and shared by every run that is evaluated on the same test stays (paired comparisons).
    """
    if isinstance(rate, str):
        rate_key = int(hashlib.sha256(rate.encode()).hexdigest()[:8], 16)
    else:
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


def level_text(values) -> np.ndarray:
    """Attribute or label values as text levels: integers without ``.0``, empty → ``unknown``."""
    out = []
    for v in np.asarray(values, dtype=object).ravel():
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or str(v) == "":
            out.append(MISSING_LEVEL)
        elif isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and float(v).is_integer()):
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return np.asarray(out, dtype=object)


def level_removal(present, levels, strata, profile: Mapping[str, float], seed: int, *,
                  source: object = "predictions", what: str = "group") -> np.ndarray:
    """Keep-mask removing, within each level ``l`` of ``profile``, ``round(r_l × n_l)`` present stays.

    ``levels`` holds each stay's level (text, see :func:`level_text`); ``n_l`` counts the stays of level
    ``l`` that have the modality. Within a level the removal is stratified on ``strata``. A level named in
    ``profile`` that no stay has is an error (a typo must not pass silently); the key ``*`` gives its rate
    to every level not named. Each level draws from its own generator, seeded from ``seed`` and the
    level's position among the sorted levels.
    """
    present = np.asarray(present, dtype=bool).ravel()
    levels = np.asarray(levels, dtype=object).ravel()
    available = sorted(set(levels.tolist()))
    for name in profile:
        if name != OTHERS and name not in available:
            raise ConfigError(_UNKNOWN_LEVEL.format(source=source, what=what, level=name,
                                                    available=", ".join(available)))  # fmt: skip
    keep = np.ones(present.size, dtype=bool)
    for k, level in enumerate(available):
        rate = profile.get(level, profile.get(OTHERS, 0.0))
        if rate <= 0:
            continue
        sub_seed = int(np.random.SeedSequence([int(seed), k]).generate_state(1, dtype=np.uint32)[0])
        keep &= stratified_removal(present & (levels == level), strata, float(rate), sub_seed)
    return keep


# ---------------------------------------------------------------------------------------------------
# the scenario objects


@dataclass(frozen=True)
class StayContext:
    """What a scenario may look at: the test predictions of one run, never its scores."""

    pred: pd.DataFrame
    present: np.ndarray  # bool: the stay has the modality naturally
    strata: np.ndarray  # the label used for stratification
    strata_col: str
    source: str = "predictions"


@dataclass(frozen=True)
class ScenarioPoint:
    """One point of a scenario's grid: what ``scenario_params`` records, the seed key, how many draws."""

    params: dict[str, Any]
    seed_key: float | str | None  # None: nothing random (natural)
    draws: int
    is_clean: bool = False


@dataclass(frozen=True)
class Removal:
    keep: np.ndarray
    evaluated: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    #: EHR perturbation scenarios: the transform of the raw hourly values passed to ``predict_fn`` (None:
    #: the removal goes through the presence flags only). ``keep`` is then False for the perturbed stays.
    ehr_transform: "EHRPerturbation | None" = None


class Scenario:
    """Base class: ``points(config)`` gives the grid, ``apply(point, ctx, seed)`` one draw's masks.

    ``options``: the scenario-specific ``EvalMissingConfig`` fields it reads (``rates``, ``level_rates``, ``by``,
    ``groups``, ``hours``, ``noise_sd``); the config refuses the others. ``check(config)`` raises ValueError
    for what is missing or wrong among them; ``modality`` fixes the modality it acts on (None: ``--modality``);
    ``curve``: whether its points form a curve over the missing rate (robustness summaries; not ``natural``).
    """

    name = ""
    options: tuple[str, ...] = ()
    modality: str | None = None
    curve = True

    def check(self, config: Any) -> None:
        """Refuse a config this scenario cannot run (ValueError: shown as a config error)."""

    def points(self, config: Any) -> list[ScenarioPoint]:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, point: ScenarioPoint, ctx: StayContext, seed: int | None) -> Removal:  # pragma: no cover
        raise NotImplementedError


class MCAR(Scenario):
    name = "mcar"
    options = ("rates",)

    def points(self, config: Any) -> list[ScenarioPoint]:
        rates = sorted({0.0, *(float(r) for r in config.rate_grid())})
        return [ScenarioPoint({"requested_rate": r}, r, 1 if r == 0 else config.draws, r == 0) for r in rates]

    def apply(self, point: ScenarioPoint, ctx: StayContext, seed: int | None) -> Removal:
        keep = stratified_removal(ctx.present, ctx.strata, point.params["requested_rate"], int(seed or 0))
        return Removal(keep, ctx.present.copy(), {"stratified_on": ctx.strata_col})


def _profile_key(name: str, by: str | None, profile: Mapping[str, float]) -> str:
    return json.dumps({"mechanism": name, "by": by, "rates": dict(sorted(profile.items()))}, sort_keys=True)


class _ProfileScenario(Scenario):
    """A grid of per-level rate profiles; the all-zero profile (the clean reference) always comes first."""

    what = "group"
    example = "WHITE=0.1,BLACK=0.4"

    def check(self, config: Any) -> None:
        if not config.level_rates:
            raise ValueError(f"the {self.name} mechanism needs at least one --rates profile, e.g. {self.example}")

    def _by(self, config: Any) -> str | None:
        return config.by

    def points(self, config: Any) -> list[ScenarioPoint]:
        profiles = [dict(p) for p in config.level_rates]
        out = [ScenarioPoint({"by": self._by(config), "rates": {}}, 0.0, 1, True)]
        seen = set()
        for p in profiles:
            key = _profile_key(self.name, self._by(config), p)
            if key in seen or all(v == 0 for v in p.values()):
                continue
            seen.add(key)
            out.append(ScenarioPoint({"by": self._by(config), "rates": dict(sorted(p.items()))}, key, config.draws))
        return out

    def _levels(self, point: ScenarioPoint, ctx: StayContext) -> tuple[np.ndarray, str]:
        by = point.params["by"]
        if by not in ctx.pred.columns:
            raise ConfigError(_NO_COLUMN.format(source=ctx.source, column=by))
        return level_text(ctx.pred[by].to_numpy()), by

    def apply(self, point: ScenarioPoint, ctx: StayContext, seed: int | None) -> Removal:
        if not point.params["rates"]:
            return Removal(np.ones(ctx.present.size, dtype=bool), ctx.present.copy(), {"stratified_on": ctx.strata_col})
        levels, by = self._levels(point, ctx)
        keep = level_removal(ctx.present, levels, ctx.strata, point.params["rates"], int(seed or 0),
                             source=ctx.source, what=self.what)  # fmt: skip
        return Removal(keep, ctx.present.copy(), {"by": by, "stratified_on": ctx.strata_col})


class GroupScenario(_ProfileScenario):
    name = "group"
    what = "group"
    options = ("level_rates", "by")

    def check(self, config: Any) -> None:
        super().check(config)
        if not config.by:
            raise ValueError("the group mechanism needs --by ATTRIBUTE (e.g. race_group)")


class LabelScenario(_ProfileScenario):
    name = "label"
    what = "label value"
    example = "1=0.6,0=0.2"
    options = ("level_rates",)

    def _by(self, config: Any) -> str | None:
        return None  # the label column, known only from the predictions (recorded at apply time)

    def _levels(self, point: ScenarioPoint, ctx: StayContext) -> tuple[np.ndarray, str]:
        return level_text(ctx.strata), ctx.strata_col

    def apply(self, point: ScenarioPoint, ctx: StayContext, seed: int | None) -> Removal:
        removal = super().apply(point, ctx, seed)
        return Removal(removal.keep, removal.evaluated, {"by": ctx.strata_col, "stratified_on": ctx.strata_col})


class NaturalScenario(Scenario):
    name = "natural"
    curve = False

    def points(self, config: Any) -> list[ScenarioPoint]:
        return [ScenarioPoint({"observed": True}, None, 1)]

    def apply(self, point: ScenarioPoint, ctx: StayContext, seed: int | None) -> Removal:
        everyone = np.ones(ctx.present.size, dtype=bool)
        return Removal(everyone, everyone.copy(), {})


# ---------------------------------------------------------------------------------------------------
# EHR perturbations: applied to the raw hourly values before the mask, filling and scaling


@dataclass(frozen=True, eq=False)
class EHRPerturbation:
    """``ehr_transform`` of one draw: perturbs the raw values [N, T, F] of the stays where ``stays`` is True.

    ``kind``: ``group`` (every value of the features in ``groups`` set to NaN — unobserved, then filled as
    real absence), ``last_hours`` (every value of the last ``hours`` hours set to NaN) or ``noise``
    (Gaussian noise with sd ``sd × IQR_f`` of the training fold added to the *observed* values only;
    unobserved hours stay NaN). The noise is drawn from ``seed`` over the full array, so it is
    reproducible. Rows are aligned with ``predictions_test.csv``.
    """

    kind: str
    stays: np.ndarray
    groups: tuple[str, ...] = ()
    hours: int = 0
    sd: float = 0.0
    seed: int = 0

    def key(self) -> str:
        digest = hashlib.sha1(np.packbits(self.stays).tobytes() + str(self.stays.size).encode()).hexdigest()
        return json.dumps([self.kind, list(self.groups), self.hours, self.sd, self.seed, digest])

    def __call__(self, values: np.ndarray, features: Any) -> np.ndarray:
        values = np.array(values, dtype=np.float32, copy=True)
        if values.shape[0] != self.stays.size:
            raise ValueError(f"ehr_transform: {values.shape[0]} stays, the draw has {self.stays.size}")
        rows = np.flatnonzero(self.stays)
        if self.kind == "group":
            feature_groups = list(getattr(features, "groups", []) or [])
            if len(feature_groups) != values.shape[2]:
                raise ConfigError("the features store records no /ehr/feature_groups: cannot remove variable groups")
            unknown = sorted(set(self.groups) - set(feature_groups))
            if unknown:
                raise ConfigError(f"--groups {', '.join(unknown)}: no such variable group in the store "
                                  f"(have {', '.join(sorted(set(feature_groups)))})")  # fmt: skip
            cols = np.flatnonzero(np.isin(np.asarray(feature_groups, dtype=object), list(self.groups)))
            values[np.ix_(rows, np.arange(values.shape[1]), cols)] = np.nan
        elif self.kind == "last_hours":
            values[rows, values.shape[1] - self.hours:, :] = np.nan
        elif self.kind == "noise":
            iqr = np.asarray(features.iqr, dtype=np.float64)
            noise = np.random.default_rng(self.seed).standard_normal(values.shape) * (self.sd * iqr)[None, None, :]
            chosen = np.zeros(values.shape, dtype=bool)
            chosen[rows] = True
            chosen &= ~np.isnan(values)
            values[chosen] = (values[chosen] + noise[chosen]).astype(np.float32)
        else:  # pragma: no cover - guarded by the scenarios
            raise ValueError(f"unknown EHR perturbation '{self.kind}'")
        return values


class _EHRScenario(Scenario):
    """A ``--rate`` grid of the share of test stays perturbed (exactly ``round(rate × n)``, label-stratified).

    Every test stay has the EHR, so evaluated = all of them and ``missing_rate`` = the share perturbed.
    """

    perturbation = ""
    modality = "ehr"
    #: the option that sets the perturbation, and its flag
    setting: tuple[str, str] = ("", "")

    def check(self, config: Any) -> None:
        field, flag = self.setting
        if not getattr(config, field):
            raise ValueError(f"the {self.name} mechanism needs {flag}")

    def settings(self, config: Any) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def points(self, config: Any) -> list[ScenarioPoint]:
        rates = sorted({0.0, *(float(r) for r in config.rate_grid())})
        settings = self.settings(config)
        out = []
        for r in rates:
            key = json.dumps({"mechanism": self.name, **settings, "rate": r}, sort_keys=True)
            params = {"perturbation": self.perturbation, **settings, "requested_rate": r}
            out.append(ScenarioPoint(params, key, 1 if r == 0 else config.draws, r == 0))
        return out

    def apply(self, point: ScenarioPoint, ctx: StayContext, seed: int | None) -> Removal:
        rate = point.params["requested_rate"]
        keep = stratified_removal(ctx.present, ctx.strata, rate, int(seed or 0))
        params = {"stratified_on": ctx.strata_col}
        if keep.all():
            return Removal(keep, ctx.present.copy(), params)
        noise_seed = int(np.random.SeedSequence([int(seed or 0), 1]).generate_state(1, dtype=np.uint32)[0])
        transform = EHRPerturbation(self.perturbation, ~keep, tuple(point.params.get("groups", ())),
                                    int(point.params.get("hours", 0)), float(point.params.get("sd", 0.0)),
                                    noise_seed)  # fmt: skip
        return Removal(keep, ctx.present.copy(), params, transform)


class EHRGroupScenario(_EHRScenario):
    name = "ehr_group"
    perturbation = "group"
    options = ("rates", "groups")
    setting = ("groups", "--groups")

    def check(self, config: Any) -> None:
        super().check(config)
        unknown = [g for g in config.groups if g not in VARIABLE_GROUPS]
        if unknown:
            raise ValueError(f"--groups: unknown variable group(s) {unknown}; choose from {', '.join(VARIABLE_GROUPS)}")

    def settings(self, config: Any) -> dict[str, Any]:
        return {"groups": sorted(config.groups)}


class EHRLastHoursScenario(_EHRScenario):
    name = "ehr_last_hours"
    perturbation = "last_hours"
    options = ("rates", "hours")
    setting = ("hours", "--hours")

    def settings(self, config: Any) -> dict[str, Any]:
        return {"hours": int(config.hours)}


class EHRNoiseScenario(_EHRScenario):
    name = "ehr_noise"
    perturbation = "noise"
    options = ("rates", "noise_sd")
    setting = ("noise_sd", "--noise-sd")

    def settings(self, config: Any) -> dict[str, Any]:
        return {"sd": float(config.noise_sd)}


_BUILTIN = {
    "mcar": (MCAR(), "remove the modality from a label-stratified random share of the stays that have it"),
    "group": (GroupScenario(), "per-group removal shares (--by ATTRIBUTE --rates G=r,...), label-stratified within groups"),
    "label": (LabelScenario(), "missing not at random: per-label removal shares (--rates 1=r1,0=r0)"),
    "natural": (NaturalScenario(), "the full test fold at its own observed missingness (no removal)"),
    "ehr_group": (EHRGroupScenario(), "remove whole EHR variable groups (--groups vitals,labs,neuro) from a share of stays, before imputation"),
    "ehr_last_hours": (EHRLastHoursScenario(), "remove the last k hours of the EHR window (--hours K) from a share of stays"),
    "ehr_noise": (EHRNoiseScenario(), "Gaussian noise (sd = --noise-sd × training IQR) on the observed EHR values of a share of stays"),
}  # fmt: skip
for _name, (_obj, _summary) in _BUILTIN.items():
    if _name not in SCENARIOS:
        SCENARIOS.register(_name, summary=_summary)(_obj)


def get_scenario(name: str) -> Scenario:
    """The registered scenario ``name`` (ConfigError listing the available ones otherwise)."""
    return SCENARIOS.get(name)
