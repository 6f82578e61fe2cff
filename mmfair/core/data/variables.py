"""The variable map: which MIMIC-IV itemids feed which hourly channel, in which unit and range.

The packaged ``variables_standard.yaml`` holds the 17 MedFuse / mimic3-benchmark variables with the
known MIMIC-IV mapping errors fixed and SaO2 split from SpO2. The final ordered feature list
(``/ehr/feature_names``; group in brackets) is::

     0 heart_rate        [vitals]   bpm            chart 220045
     1 sbp               [vitals]   mmHg           chart 220050, 225309, 220179, 224167, 227243
     2 dbp               [vitals]   mmHg           chart 220051, 225310, 220180, 224643
     3 mbp               [vitals]   mmHg           chart 220052, 225312, 224322, 220181
     4 resp_rate         [vitals]   insp/min       chart 220210, 224690, 224689, 224422
     5 temperature       [vitals]   °C             chart 223762, 223761 (°F → °C)
     6 spo2              [vitals]   %              chart 220277 (values ≤ 1 × 100)
     7 fio2              [vitals]   fraction       chart 223835 (values > 1 ÷ 100)
     8 capillary_refill  [vitals]   0/1            chart 223951, 224308 (text → 0/1)
     9 weight            [vitals]   kg             chart 224639, 226512, 226531 (lb → kg)
    10 height            [vitals]   cm             chart 226730, 226707 (in → cm)
    11 gcs_eye           [neuro]    1–4            chart 220739
    12 gcs_verbal        [neuro]    0–5            chart 223900 ('No Response-ETT' → 0)
    13 gcs_motor         [neuro]    1–6            chart 223901
    14 gcs_total         [neuro]    3–15           eye + verbal + motor of the same hour; 15 if verbal = 0
    15 glucose           [labs]     mg/dL          blood labs 50931, 50809; chart 220621, 226537, 225664
    16 ph                [labs]     pH             blood lab 50820; chart 223830, 220274
    17 sao2              [labs]     %              blood lab 50817; chart 220227

The packaged ``variables_extended.yaml`` (``--variables extended``) starts with ``extends: standard``
and adds ten blood labs (creatinine, bun, lactate, wbc, hemoglobin, platelets, sodium, potassium,
bicarbonate, bilirubin; 29 channels in all) and ``urine_output`` [output], the hourly sum of the urine
items of ``icu/outputevents`` (``aggregate: sum``; GU irrigant in has ``sign: -1``). Itemids and
their justification are in the YAML's comments.

A map file may start with ``extends: <packaged map>`` to build on it; a source's table is
``chartevents``, ``labevents`` or ``outputevents``; ``sign`` (1 or −1) multiplies a source's values
after the range check; a variable's ``aggregate`` is ``last`` (default: the last observation of the
hour) or ``sum`` (the sum of the hour's in-range observations).

GCS follows mimic-code's ``measurement/gcs.sql``: an intubated patient's verbal response
('No Response-ETT') is stored as 0, a level of its own below 'No Response' (1), and a GCS total whose
verbal component is 0 is set to 15 (mimic-code's "sedated/intubated → normal" convention). The total
is computed only where all three components were observed in the same hour; no value is carried
between hours at prep time (filling is done per fold at load time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from mmfair.core.errors import ConfigError

VARIABLE_GROUPS = ("vitals", "labs", "neuro", "output")
SOURCE_TABLES = ("chartevents", "labevents", "outputevents")
AGGREGATES = ("last", "sum")
CONVERSIONS = ("f_to_c", "percent_to_fraction", "fraction_to_percent", "lb_to_kg", "in_to_cm")
DERIVED_RULES = ("gcs_total",)
PACKAGED_MAPS = {"standard": "variables_standard.yaml", "extended": "variables_extended.yaml"}

ERR_UNKNOWN_MAP = "variable map {spec!r}: neither a packaged map ({names}) nor an existing YAML file"
ERR_BAD_MAP = "{path}: variable {name!r}: {problem}"
ERR_NOT_A_MAP = "{path}: expected a top-level 'variables' list"
ERR_EXTENDS = "{path}: extends {extends!r}: not a packaged map to build on ({names})"


@dataclass(frozen=True)
class Source:
    """One itemid feeding a variable."""

    table: str
    itemid: int
    priority: int = 0
    convert: str | None = None
    fluid: str | None = None
    sign: int = 1


@dataclass(frozen=True)
class Variable:
    """One hourly channel of ``/ehr/values``."""

    name: str
    group: str
    valid_low: float
    valid_high: float
    unit: str = ""
    sources: tuple[Source, ...] = ()
    text: dict[str, float] = field(default_factory=dict)
    derived: dict[str, str] | None = None
    aggregate: str = "last"


@dataclass(frozen=True)
class VariableMap:
    """The ordered variables of a map and where it came from."""

    variables: tuple[Variable, ...]
    origin: str

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    @property
    def groups(self) -> list[str]:
        return [v.group for v in self.variables]

    def index(self, name: str) -> int:
        return self.names.index(name)


def load_variable_map(spec: str) -> VariableMap:
    """Load a variable map by packaged name (``standard``, ``extended``) or from a YAML file path.

    Parameters
    ----------
    spec : str
        ``"standard"``, ``"extended"`` or a path to a YAML file with the same shape as the packaged one.

    Returns
    -------
    VariableMap
        The variables in file order.
    """
    if spec in PACKAGED_MAPS:
        ref = resources.files("mmfair.core.data") / "resources" / PACKAGED_MAPS[spec]
        return _parse_map(yaml.safe_load(ref.read_text()), origin=f"packaged:{PACKAGED_MAPS[spec]}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(ERR_UNKNOWN_MAP.format(spec=spec, names=", ".join(PACKAGED_MAPS)))
    return _parse_map(yaml.safe_load(path.read_text()), origin=str(path))


def _parse_map(data: object, origin: str) -> VariableMap:
    if not isinstance(data, dict) or not isinstance(data.get("variables"), list):
        raise ConfigError(ERR_NOT_A_MAP.format(path=origin))
    base: tuple[Variable, ...] = ()
    extends = data.get("extends")
    if extends is not None:
        if extends not in PACKAGED_MAPS or PACKAGED_MAPS[extends] == Path(origin.split(":")[-1]).name:
            raise ConfigError(ERR_EXTENDS.format(path=origin, extends=extends,
                                                 names=", ".join(PACKAGED_MAPS)))
        base = load_variable_map(extends).variables
    variables = base + tuple(_parse_variable(item, origin) for item in data["variables"])
    _check_unique_names(variables, origin)
    for var in variables:
        _check_derived_refs(var, {v.name for v in variables}, origin)
    return VariableMap(variables=variables, origin=origin)


def _parse_variable(item: dict, origin: str) -> Variable:
    name = str(item.get("name", "?"))

    def bad(problem: str) -> ConfigError:
        return ConfigError(ERR_BAD_MAP.format(path=origin, name=name, problem=problem))

    group = item.get("group")
    if group not in VARIABLE_GROUPS:
        raise bad(f"group {group!r} is not one of {', '.join(VARIABLE_GROUPS)}")
    valid = item.get("valid")
    if not (isinstance(valid, list) and len(valid) == 2 and valid[0] <= valid[1]):
        raise bad(f"valid must be [low, high], got {valid!r}")
    sources = tuple(_parse_source(s, bad) for s in item.get("sources") or [])
    derived = item.get("derived")
    if derived is not None and derived.get("rule") not in DERIVED_RULES:
        raise bad(f"derived rule {derived.get('rule')!r} is not one of {', '.join(DERIVED_RULES)}")
    if not sources and derived is None:
        raise bad("needs sources or a derived rule")
    text = {str(k).strip().lower(): float(v) for k, v in (item.get("text") or {}).items()}
    aggregate = item.get("aggregate", "last")
    if aggregate not in AGGREGATES:
        raise bad(f"aggregate {aggregate!r} is not one of {', '.join(AGGREGATES)}")
    return Variable(
        name=name,
        group=group,
        valid_low=float(valid[0]),
        valid_high=float(valid[1]),
        unit=str(item.get("unit", "")),
        sources=sources,
        text=text,
        derived=dict(derived) if derived else None,
        aggregate=aggregate,
    )


def _parse_source(raw: dict, bad) -> Source:
    table = raw.get("table")
    if table not in SOURCE_TABLES:
        raise bad(f"source table {table!r} is not one of {', '.join(SOURCE_TABLES)}")
    convert = raw.get("convert")
    if convert is not None and convert not in CONVERSIONS:
        raise bad(f"convert {convert!r} is not one of {', '.join(CONVERSIONS)}")
    fluid = raw.get("fluid")
    if fluid is not None and table != "labevents":
        raise bad("fluid applies to labevents sources only")
    sign = raw.get("sign", 1)
    if sign not in (1, -1):
        raise bad(f"sign must be 1 or -1, got {sign!r}")
    return Source(table=table, itemid=int(raw["itemid"]), priority=int(raw.get("priority", 0)),
                  convert=convert, fluid=fluid, sign=int(sign))


def _check_unique_names(variables: tuple[Variable, ...], origin: str) -> None:
    seen: set[str] = set()
    for var in variables:
        if var.name in seen:
            raise ConfigError(ERR_BAD_MAP.format(path=origin, name=var.name, problem="defined twice"))
        seen.add(var.name)


def _check_derived_refs(var: Variable, names: set[str], origin: str) -> None:
    if var.derived is None:
        return
    for role in ("eye", "verbal", "motor"):
        ref = var.derived.get(role)
        if ref not in names:
            raise ConfigError(ERR_BAD_MAP.format(path=origin, name=var.name,
                                                 problem=f"derived {role} refers to unknown variable {ref!r}"))
