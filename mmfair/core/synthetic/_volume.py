"""MIMIC-IV's row volume: chartevents and labevents rows of itemids that prep does not read.

Real v2.2 holds 313,645,063 chartevents and 118,171,367 labevents rows for 73,181 ICU stays, about 4,286
and 1,615 per stay (reference/mimic_schema.md §1.1). Most are items no benchmark variable uses: alarm
limits, rhythm and nursing assessments, ventilator settings, chart copies of labs, blood counts,
coagulation, differentials, liver tests, urinalysis. With ``chart_volume="mimic"`` the generator adds
such rows until the average per ICU stay matches v2.2, so prep scans MIMIC's rows per stay and has to
filter them out as it does real ones. Chart rows fall over the whole stay (a few before ``intime``), so
inside and outside the observation window; lab draws fall in the ICU stay, elsewhere in the admission,
and before it with no ``hadm_id`` (outpatient draws).

Everything is generated one chunk of stays at a time, each chunk from its own seed, so memory does not
grow with the tree and the rows depend only on the seed, not on how the caller writes them.

The itemids, labels, units and value strings follow MIMIC-IV's d_items / d_labitems and value formats
from memory [G]. None is in a packaged variable map (a test checks), and no planted signal rides on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

HOUR = 3600
V22_ICU_STAYS = 73_181
CHART_ROWS_PER_STAY = 313_645_063 / V22_ICU_STAYS
LAB_ROWS_PER_STAY = 118_171_367 / V22_ICU_STAYS
STAYS_PER_CHUNK = 100        # ~0.45 M chart and ~0.17 M lab rows per chunk at MIMIC's volume
VOLUME_STREAM = 6            # SeedSequence spawn key; the compact generator uses keys 0-5
EARLY_CHART_SHARE = 0.03     # chart rows timed up to 2 h before intime, as in real stays
LAB_PLACE_SHARES = (0.55, 0.30, 0.15)  # lab draws in the ICU stay / elsewhere in the admission / outpatient


@dataclass(frozen=True)
class Item:
    """One itemid and how its values look: a normal draw (``center``, ``spread``) or a choice of ``values``."""

    itemid: int
    label: str
    category: str
    unit: str = ""
    center: float = 0.0
    spread: float = 0.0
    low: float = -np.inf
    high: float = np.inf
    decimals: int = 0
    values: tuple = ()       # numbers (settings) or strings (text items: valuenum stays empty)
    weight: float = 1.0      # share of this table's extra rows (chart) or of the panel's draws (labs)
    fluid: str = "Blood"     # labs only
    normal: tuple[float | None, float | None] = (None, None)  # labs only: reference range

    @property
    def is_text(self) -> bool:
        return bool(self.values) and isinstance(self.values[0], str)


def _chart(itemid, label, category, unit="", weight=1.0, **kw) -> Item:
    return Item(itemid, label, category, unit, weight=weight, **kw)


CHART_ITEMS: tuple[Item, ...] = (
    _chart(220048, "Heart Rhythm", "Routine Vital Signs", weight=8, values=(
        "SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)", "SB (Sinus Bradycardia)",
        "1st AV (First degree AV Block)", "V Paced")),
    _chart(224650, "Ectopy Type 1", "Routine Vital Signs", weight=5, values=("None", "PVC's", "PAC's")),
    _chart(220046, "Heart rate Alarm - High", "Alarms", "bpm", weight=6, values=(120, 130, 140, 150)),
    _chart(220047, "Heart Rate Alarm - Low", "Alarms", "bpm", weight=6, values=(50, 55, 60, 45)),
    _chart(223751, "Non-Invasive Blood Pressure Alarm - High", "Alarms", "mmHg", weight=4, values=(160, 170, 180)),
    _chart(223752, "Non-Invasive Blood Pressure Alarm - Low", "Alarms", "mmHg", weight=4, values=(90, 85, 80)),
    _chart(223769, "O2 Saturation Pulseoxymetry Alarm - High", "Alarms", "%", weight=5, values=(100,)),
    _chart(223770, "O2 Saturation Pulseoxymetry Alarm - Low", "Alarms", "%", weight=5, values=(88, 90, 92, 85)),
    _chart(224161, "Resp Alarm - High", "Alarms", "insp/min", weight=5, values=(35, 30, 40)),
    _chart(224162, "Resp Alarm - Low", "Alarms", "insp/min", weight=5, values=(8, 6, 10)),
    _chart(226253, "SpO2 Desat Limit", "Alarms", "%", weight=2, values=(85, 88)),
    _chart(224641, "Alarms On", "Alarms", weight=4, values=("Yes",)),
    _chart(224168, "Parameters Checked", "Alarms", weight=4, values=("Yes",)),
    _chart(223834, "O2 Flow", "Respiratory", "L/min", weight=3, center=3, spread=2, low=1, high=15),
    _chart(226732, "O2 Delivery Device(s)", "Respiratory", weight=4, values=(
        "Nasal cannula", "None", "Endotracheal tube", "Face tent", "High flow neb", "Tracheostomy tube")),
    _chart(223849, "Ventilator Mode", "Respiratory", weight=2,
           values=("CMV/ASSIST/AutoFlow", "CPAP/PSV", "CMV/ASSIST")),
    _chart(220339, "PEEP set", "Respiratory", "cmH2O", weight=2, values=(5, 8, 10, 12)),
    _chart(224685, "Tidal Volume (observed)", "Respiratory", "mL", weight=2, center=450, spread=80, low=100, high=1200),
    _chart(224695, "Peak Insp. Pressure", "Respiratory", "cmH2O", weight=2, center=22, spread=5, low=5, high=60),
    _chart(224080, "Head of Bed", "Treatments", weight=3, values=("30 Degrees", "45 Degrees", "Other/Remarks")),
    _chart(224093, "Position", "Treatments", weight=3,
           values=("Left Side", "Right Side", "Supine", "Sitting", "Chair")),
    _chart(228096, "Richmond-RAS Scale", "Neurological", weight=3, values=(
        " 0  Alert and calm", "-1 Awakens to voice (eyes open/contact) > 10 sec",
        "-2 Light sedation, briefly awakens to voice (eyes open/contact) < 10 sec", "+1 Anxious, apprehensive, "
        "but not aggressive", "-4 Deep sedation, no response to voice, but movement or eye opening to physical "
        "stimulation")),
    _chart(223781, "Pain Present", "Pain/Sedation", weight=3, values=("No", "Yes")),
    _chart(224026, "Skin Color", "Skin - Assessment", weight=2, values=("Normal", "Pale", "Jaundiced")),
    _chart(224027, "Skin Temperature", "Skin - Assessment", weight=2, values=("Warm", "Cool", "Hot")),
    _chart(224028, "Skin Condition", "Skin - Assessment", weight=2, values=("Dry", "Moist", "Diaphoretic")),
    _chart(224054, "Braden Sensory Perception", "Skin - Impairment", weight=1, values=(
        "No Impairment", "Slight Impairment", "Very Limited", "Completely Limited")),
    _chart(224055, "Braden Moisture", "Skin - Impairment", weight=1, values=(
        "Rarely Moist", "Occasionally Moist", "Consistently Moist")),
    _chart(224056, "Braden Activity", "Skin - Impairment", weight=1,
           values=("Bedfast", "Chairfast", "Walks Occasionally")),
    _chart(224057, "Braden Mobility", "Skin - Impairment", weight=1, values=("Very Limited", "Slight Limitations")),
    _chart(224058, "Braden Nutrition", "Skin - Impairment", weight=1, values=("Probably Inadequate", "Adequate")),
    _chart(224059, "Braden Friction/Shear", "Skin - Impairment", weight=1, values=("Potential Problem", "Problem")),
    _chart(220224, "Arterial O2 pressure", "Labs", "mmHg", weight=1, center=105, spread=35, low=30, high=500),
    _chart(220235, "Arterial CO2 Pressure", "Labs", "mmHg", weight=1, center=41, spread=7, low=15, high=120),
    _chart(220645, "Sodium (serum)", "Labs", "mEq/L", weight=1, center=139, spread=4, low=110, high=170),
    _chart(227442, "Potassium (serum)", "Labs", "mEq/L", weight=1, center=4.1, spread=0.5, low=1.5, high=9,
           decimals=1),
    _chart(220615, "Creatinine (serum)", "Labs", "mg/dL", weight=1, center=1.1, spread=0.5, low=0.1, high=15,
           decimals=1),
    _chart(225624, "BUN", "Labs", "mg/dL", weight=1, center=22, spread=12, low=2, high=180),
    _chart(220228, "Hemoglobin", "Labs", "g/dl", weight=1, center=10, spread=1.8, low=3, high=20, decimals=1),
    _chart(220546, "WBC", "Labs", "K/uL", weight=1, center=10, spread=4, low=0.1, high=80, decimals=1),
)


def _lab(itemid, label, category, unit, center, spread, decimals, normal=(None, None), fluid="Blood", **kw) -> Item:
    return Item(itemid, label, category, unit, center=center, spread=spread, decimals=decimals, normal=normal,
                fluid=fluid, low=kw.pop("low", 0.0), **kw)


# panels drawn together (one specimen each), with their share of lab draws
LAB_PANELS: tuple[tuple[float, tuple[Item, ...]], ...] = (
    (0.26, (  # chemistry
        _lab(50868, "Anion Gap", "Chemistry", "mEq/L", 14, 3, 0, (8, 20)),
        _lab(50893, "Calcium, Total", "Chemistry", "mg/dL", 8.5, 0.6, 1, (8.4, 10.3)),
        _lab(50902, "Chloride", "Chemistry", "mEq/L", 103, 5, 0, (96, 108)),
        _lab(50960, "Magnesium", "Chemistry", "mg/dL", 2.0, 0.3, 1, (1.6, 2.6)),
        _lab(50970, "Phosphate", "Chemistry", "mg/dL", 3.5, 1.0, 1, (2.7, 4.5)),
    )),
    (0.24, (  # blood count
        _lab(51221, "Hematocrit", "Hematology", "%", 30, 5, 1, (36, 48)),
        _lab(51248, "MCH", "Hematology", "pg", 30, 2, 1, (26, 32)),
        _lab(51249, "MCHC", "Hematology", "%", 33, 1.2, 1, (31, 35)),
        _lab(51250, "MCV", "Hematology", "fL", 90, 6, 0, (82, 98)),
        _lab(51277, "RDW", "Hematology", "%", 15, 2, 1, (10.5, 15.5)),
        _lab(51279, "Red Blood Cells", "Hematology", "m/uL", 3.3, 0.6, 2, (4.2, 5.4)),
    )),
    (0.14, (  # coagulation
        _lab(51237, "INR(PT)", "Hematology", "", 1.3, 0.4, 1, (0.9, 1.1)),
        _lab(51274, "PT", "Hematology", "sec", 14, 3, 1, (9.4, 12.5)),
        _lab(51275, "PTT", "Hematology", "sec", 33, 10, 1, (25, 36.5)),
    )),
    (0.16, (  # blood gas
        _lab(50802, "Base Excess", "Blood Gas", "mEq/L", 0, 4, 0, low=-30),
        _lab(50804, "Calculated Total CO2", "Blood Gas", "mEq/L", 25, 4, 0, (21, 30)),
        _lab(50818, "pCO2", "Blood Gas", "mm Hg", 41, 7, 0, (35, 45)),
        _lab(50821, "pO2", "Blood Gas", "mm Hg", 110, 40, 0, (85, 105)),
    )),
    (0.08, (  # differential
        _lab(51146, "Basophils", "Hematology", "%", 0.3, 0.2, 1, (0, 1)),
        _lab(51200, "Eosinophils", "Hematology", "%", 1.2, 1.0, 1, (1, 4)),
        _lab(51244, "Lymphocytes", "Hematology", "%", 12, 6, 1, (18, 42)),
        _lab(51254, "Monocytes", "Hematology", "%", 6, 2, 1, (2, 11)),
        _lab(51256, "Neutrophils", "Hematology", "%", 78, 8, 1, (50, 70)),
    )),
    (0.07, (  # liver
        _lab(50861, "Alanine Aminotransferase (ALT)", "Chemistry", "IU/L", 40, 30, 0, (0, 40), low=3),
        _lab(50878, "Asparate Aminotransferase (AST)", "Chemistry", "IU/L", 45, 35, 0, (0, 40), low=5),
        _lab(50863, "Alkaline Phosphatase", "Chemistry", "IU/L", 100, 50, 0, (35, 105), low=10),
        _lab(50862, "Albumin", "Chemistry", "g/dL", 3.2, 0.5, 1, (3.5, 5.2), low=1),
    )),
    (0.05, (  # urinalysis
        _lab(51498, "Specific Gravity", "Hematology", "", 1.015, 0.006, 3, (1.001, 1.035), fluid="Urine", low=1.001),
        Item(51484, "Ketone", "Hematology", "mg/dL", values=("NEG", "TR", "10", "15"), fluid="Urine"),
        Item(51466, "Blood", "Hematology", "", values=("NEG", "TR", "SM", "MOD", "LG"), fluid="Urine"),
        Item(51514, "Urobilinogen", "Hematology", "mg/dL", values=("NEG", "1", "2"), fluid="Urine"),
    )),
)
LAB_ITEMS: tuple[Item, ...] = tuple(item for _, panel in LAB_PANELS for item in panel)


def d_items_rows() -> list[tuple]:
    """d_items rows of the extra chart items (same fields as ``_vocab.D_ITEMS_ROWS``)."""
    return [(it.itemid, it.label, it.label, "chartevents", it.category, it.unit or None,
             "Text" if it.is_text else "Numeric", None, None) for it in CHART_ITEMS]


def d_labitems_rows() -> list[tuple]:
    """d_labitems rows of the extra lab items (itemid, label, fluid, category)."""
    return [(it.itemid, it.label, it.fluid, it.category) for it in LAB_ITEMS]


@dataclass(frozen=True)
class Chunk:
    """The rows of one chunk of stays, compact and extra together, in file order (by stay, then time)."""

    chart: dict[str, np.ndarray]
    labs: dict[str, np.ndarray]
    n_extra_chart: int
    n_extra_labs: int


def chunks(stays: pd.DataFrame, chart: dict[str, np.ndarray], labs: dict[str, np.ndarray], seed: int,
           stays_per_chunk: int = STAYS_PER_CHUNK, first_chunk_index: int = 0) -> Iterator[Chunk]:
    """Yield the chartevents and labevents rows chunk by chunk of stays, the extra volume added.

    ``chart`` and ``labs`` are the compact tables (with ``stay_row``); their rows come out unchanged,
    each in its stay's chunk. The extra rows of a chunk depend only on ``seed`` and the chunk's index,
    counted from ``first_chunk_index`` (``stays`` may be one part of a larger population, drawn on its own).
    """
    n = len(stays)
    intime = stays["intime"].to_numpy().astype("datetime64[s]")
    outtime = stays["outtime"].to_numpy().astype("datetime64[s]")
    stay_hours = np.maximum((outtime - intime).astype(np.int64) / HOUR, 0.0)
    total_hours = max(float(stay_hours.sum()), 1.0)
    chart_per_hour = max(CHART_ROWS_PER_STAY * n - len(chart["stay_row"]), 0) / total_hours
    mean_panel = sum(share * len(panel) for share, panel in LAB_PANELS) / sum(s for s, _ in LAB_PANELS)
    draws_per_hour = max(LAB_ROWS_PER_STAY * n - len(labs["stay_row"]), 0) / mean_panel / total_hours
    stay_columns = {
        "subject_id": stays["subject_id"].to_numpy(), "hadm_id": stays["hadm_id"].to_numpy(),
        "stay_id": stays["stay_id"].to_numpy(), "intime": intime, "outtime": outtime, "hours": stay_hours,
        "admittime": stays["admittime"].to_numpy().astype("datetime64[s]"),
        "dischtime": stays["dischtime"].to_numpy().astype("datetime64[s]"),
    }
    chart_order, chart_bounds = _group_by_stay(chart["stay_row"], n)
    lab_order, lab_bounds = _group_by_stay(labs["stay_row"], n)
    next_labevent_id = int(np.max(labs["labevent_id"], initial=1000)) + 1
    for index, first in enumerate(range(0, n, stays_per_chunk), start=first_chunk_index):
        last = min(first + stays_per_chunk, n)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VOLUME_STREAM, index)))
        rows = np.arange(first, last)
        extra_chart = _chart_rows(stay_columns, rows, chart_per_hour, rng)
        extra_labs = _lab_rows(stay_columns, rows, draws_per_hour, next_labevent_id, rng)
        next_labevent_id += len(extra_labs["stay_row"])
        compact_chart = _take(chart, chart_order[chart_bounds[first]:chart_bounds[last]])
        compact_labs = _take(labs, lab_order[lab_bounds[first]:lab_bounds[last]])
        yield Chunk(chart=_merge(compact_chart, extra_chart), labs=_merge(compact_labs, extra_labs),
                    n_extra_chart=len(extra_chart["stay_row"]), n_extra_labs=len(extra_labs["stay_row"]))


def _group_by_stay(stay_row: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(stay_row, kind="stable")
    bounds = np.searchsorted(stay_row[order], np.arange(n + 1))
    return order, bounds


def _take(table: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {key: np.asarray(col)[index] for key, col in table.items()}


def _merge(compact: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Both parts, sorted by stay and time; a stable sort keeps compact rows first among equal keys."""
    both = {key: np.concatenate([compact[key], extra[key].astype(compact[key].dtype, copy=False)])
            for key in compact}
    order = np.lexsort((both["charttime"], both["stay_row"]))
    return {key: col[order] for key, col in both.items()}


def _minutes(t: np.ndarray) -> np.ndarray:
    """Times floored to the minute, as charted."""
    return t.astype("datetime64[m]").astype("datetime64[s]")


def _values(items: tuple[Item, ...], which: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The value text and valuenum of rows of ``items[which]``, in MIMIC's formats."""
    text = np.empty(len(which), dtype=object)
    number = np.full(len(which), np.nan)
    for j, item in enumerate(items):
        idx = np.flatnonzero(which == j)
        if not len(idx):
            continue
        if item.values:
            picked = rng.integers(0, len(item.values), len(idx))
            text[idx] = np.array([str(x) for x in item.values], dtype=object)[picked]
            if not item.is_text:
                number[idx] = np.asarray(item.values, dtype=float)[picked]
            continue
        # + 0.0 turns -0.0 into 0.0: the writer formats each distinct value once, and -0.0 == 0.0 there
        x = np.round(np.clip(item.center + item.spread * rng.standard_normal(len(idx)), item.low, item.high),
                     item.decimals) + 0.0
        codes, uniques = pd.factorize(x)
        fmt = "%d" if item.decimals == 0 else f"%.{item.decimals}f"
        text[idx] = np.array([fmt % u for u in uniques], dtype=object)[codes]
        number[idx] = x
    return text, number


def _chart_rows(stays: dict, rows: np.ndarray, per_hour: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    counts = rng.poisson(per_hour * stays["hours"][rows])
    stay_row = np.repeat(rows, counts)
    m = len(stay_row)
    offset = rng.random(m) * stays["hours"][stay_row] * HOUR
    early = rng.random(m) < EARLY_CHART_SHARE
    offset[early] = -rng.random(int(early.sum())) * 2 * HOUR
    charttime = _minutes(stays["intime"][stay_row] + offset.astype("timedelta64[s]"))
    weights = np.array([it.weight for it in CHART_ITEMS])
    which = rng.choice(len(CHART_ITEMS), m, p=weights / weights.sum())
    value, valuenum = _values(CHART_ITEMS, which, rng)
    units = np.array([it.unit for it in CHART_ITEMS], dtype=object)
    caregivers = rng.integers(10000, 99999, 400)
    return {
        "subject_id": stays["subject_id"][stay_row], "hadm_id": stays["hadm_id"][stay_row],
        "stay_id": stays["stay_id"][stay_row], "caregiver_id": caregivers[rng.integers(0, len(caregivers), m)],
        "charttime": charttime, "storetime": charttime + rng.integers(1, 90, m).astype("timedelta64[m]"),
        "itemid": np.array([it.itemid for it in CHART_ITEMS])[which], "value": value, "valuenum": valuenum,
        "valueuom": units[which], "warning": np.zeros(m, np.int64), "stay_row": stay_row,
    }


def _lab_rows(stays: dict, rows: np.ndarray, draws_per_hour: float, first_id: int,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    draws = rng.poisson(draws_per_hour * stays["hours"][rows])
    draw_row = np.repeat(rows, draws)
    d = len(draw_row)
    # where each draw falls: in the ICU stay, elsewhere in the admission, or an outpatient draw before it
    place = rng.choice(3, d, p=np.asarray(LAB_PLACE_SHARES) / sum(LAB_PLACE_SHARES))
    intime, outtime = stays["intime"][draw_row], stays["outtime"][draw_row]
    admit, disch = stays["admittime"][draw_row], stays["dischtime"][draw_row]
    u = rng.random(d)
    in_stay = intime + (u * (outtime - intime).astype(np.int64)).astype("timedelta64[s]")
    in_admission = admit + (u * np.maximum((disch - admit).astype(np.int64), 0)).astype("timedelta64[s]")
    before = admit - (HOUR * 24 * (1 + 364 * u)).astype("timedelta64[s]")
    draw_time = _minutes(np.select([place == 0, place == 1], [in_stay, in_admission], before))
    shares = np.array([share for share, _ in LAB_PANELS])
    panel = rng.choice(len(LAB_PANELS), d, p=shares / shares.sum())
    sizes = np.array([len(items) for _, items in LAB_PANELS])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    per_draw = sizes[panel]
    draw = np.repeat(np.arange(d), per_draw)
    which = starts[panel][draw] + np.arange(len(draw)) - np.repeat(np.cumsum(per_draw) - per_draw, per_draw)
    m = len(draw)
    value, valuenum = _values(LAB_ITEMS, which, rng)
    lows = np.array([np.nan if it.normal[0] is None else it.normal[0] for it in LAB_ITEMS])[which]
    highs = np.array([np.nan if it.normal[1] is None else it.normal[1] for it in LAB_ITEMS])[which]
    hadm = stays["hadm_id"][draw_row].astype(float)
    hadm[(place == 2) | (rng.random(d) < 0.02)] = np.nan
    providers = np.array(["P" + "".join(rng.choice(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"), 5))
                          for _ in range(300)] + [""] * 200, dtype=object)
    charttime = draw_time[draw]
    return {
        "labevent_id": first_id + np.arange(m), "subject_id": stays["subject_id"][draw_row][draw],
        "hadm_id": hadm[draw], "specimen_id": rng.integers(10_000_000, 100_000_000, d)[draw],
        "itemid": np.array([it.itemid for it in LAB_ITEMS])[which],
        "order_provider_id": providers[rng.integers(0, len(providers), d)][draw], "charttime": charttime,
        "storetime": charttime + rng.integers(15, 240, d).astype("timedelta64[m]")[draw], "value": value,
        "valuenum": valuenum, "valueuom": np.array([it.unit for it in LAB_ITEMS], dtype=object)[which],
        "ref_range_lower": lows, "ref_range_upper": highs,
        "flag": np.where((valuenum < lows) | (valuenum > highs), "abnormal", "").astype(object),
        "priority": np.array(["STAT", "ROUTINE", ""], dtype=object)[rng.choice(3, d, p=[0.55, 0.4, 0.05])][draw],
        "comments": np.where(rng.random(m) < 0.01, "___", "").astype(object),
        "stay_row": draw_row[draw],
    }
