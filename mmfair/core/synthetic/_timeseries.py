"""Charted vitals, labs and urine output driven by the per-stay latents.

What is planted, and why:

* Vitals and labs over the whole ICU stay (hourly in the first 48 h, every 4 h after), each a function of
  the EHR latents (severity, respiratory, renal, glycaemic, inflammation) plus measurement noise, with a
  mild recovery drift. Nothing here depends on the outcome itself, so the series carry exactly the
  latents' information.
* True arterial saturation follows the respiratory latent and is charted as SaO2 (220227) and the
  blood-gas lab 50817 when an arterial line is in place. Pulse oximetry (220277) reads it with noise and,
  with ``spo2_bias`` on, over-reads by 2–4.5 points in Black patients (more at lower saturation) — the
  documented occult-hypoxaemia effect — so an SpO2-based model misses their respiratory failure.
* The traps a correct prep must handle: temperature partly in °F (223761), weight in lbs (226531),
  height in inches (226707), FiO2 charted in percent, GCS as MetaVision text plus valuenum, capillary
  refill as text, urine glucose/pH (fluid ``Urine``) beside blood glucose/pH, labs with an empty
  hadm_id, labs before the ICU admission, a few out-of-range garbage values, and duplicates within an
  hour (some at the very same charttime, told apart by storetime).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmfair.core.synthetic import _model as model
from mmfair.core.synthetic import _vocab as v

HOUR = 3600
MAX_SERIES_HOURS = 14 * 24
BLACK_SPO2_BIAS = (2.0, 4.5)


def spo2_overread(true_saturation: np.ndarray) -> np.ndarray:
    """Points by which pulse oximetry over-reads in the affected group: larger at lower saturation."""
    return np.clip(BLACK_SPO2_BIAS[0] + 0.2 * (97.0 - true_saturation), *BLACK_SPO2_BIAS)


class _Events:
    """Accumulates event columns per variable and concatenates them once."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, **cols: np.ndarray) -> None:
        n = len(cols["row"])
        if n:
            self.parts.append({k: np.broadcast_to(np.asarray(c), (n,)) if np.ndim(c) == 0 else np.asarray(c)
                               for k, c in cols.items()})

    def frame(self) -> dict[str, np.ndarray]:
        """The concatenated columns; the parts are released, so the rows are not held twice afterwards."""
        parts, self.parts = self.parts, []
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0].keys()}


def _fmt(values: np.ndarray, fmt: str) -> np.ndarray:
    """``fmt % value`` per element, formatting each distinct value once and sharing the string objects.

    Distinct is by bit pattern (so -0.0 and 0.0 stay apart); a column of millions of readings then costs
    one pointer per row instead of one Python string per row.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    codes, uniques = pd.factorize(values.view(np.int64))
    texts = np.array([fmt % x for x in uniques.view(np.float64)], dtype=object)
    return texts[codes]


def _same_text(text: str, n: int) -> np.ndarray:
    """``n`` references to one string (``np.full`` would make a new string object per row)."""
    out = np.empty(n, dtype=object)
    out[:] = text
    return out


FIRST_LABEVENT_ID = 1001
SPECIMEN_ID_BASE = 10_000_000


def build_events(stays: pd.DataFrame, spo2_bias: bool, rng: np.random.Generator,
                 first_labevent_id: int = FIRST_LABEVENT_ID, specimen_id_base: int = SPECIMEN_ID_BASE):
    """Return (chartevents, labevents, outputevents) as dicts of column arrays (times as datetime64[s]).

    The chartevents and labevents dicts also hold ``stay_row``, each row's position in ``stays`` (not a
    MIMIC column). ``stays`` may be one chunk of the population: ``labevent_id`` then counts on from
    ``first_labevent_id`` and ``specimen_id`` from above ``specimen_id_base``, so ids stay unique over chunks.
    """
    n = len(stays)
    lat = {name: stays[f"latent_{name}"].to_numpy() for name in model.LATENTS}
    intime = stays["intime"].to_numpy().astype("datetime64[s]")
    outtime = stays["outtime"].to_numpy().astype("datetime64[s]")
    admittime = stays["admittime"].to_numpy().astype("datetime64[s]")
    device = stays["device"].to_numpy().astype(bool)
    black = (stays["race_group"].to_numpy() == "BLACK") & spo2_bias
    art_line = device | (lat["severity"] > 0.8) | (rng.random(n) < 0.15)

    # ---- slots: hourly for 48 h, then every 4 h, to outtime -----------------------------------------
    stay_hours = np.minimum((outtime - intime).astype(np.int64) / HOUR, MAX_SERIES_HOURS)
    n_hourly = np.minimum(np.floor(stay_hours), 48).astype(np.int64)
    n_late = np.maximum(np.floor((stay_hours - 48) / 4), 0).astype(np.int64)
    n_slots = n_hourly + n_late
    row = np.repeat(np.arange(n), n_slots)
    k = np.arange(len(row)) - np.repeat(np.cumsum(n_slots) - n_slots, n_slots)
    slot_start = np.where(k < np.repeat(n_hourly, n_slots), k, 48 + 4 * (k - np.repeat(n_hourly, n_slots)))
    jitter_min = rng.integers(0, 50, len(row))
    t_sec = slot_start * HOUR + jitter_min * 60
    charttime = intime[row] + t_sec.astype("timedelta64[s]")
    hours = t_sec / HOUR
    recovery = 1.0 - 0.25 * np.minimum(hours / 96.0, 1.0)
    slot_mod = slot_start  # schedules key on the slot's hour
    m = len(row)

    sev = lat["severity"][row] * recovery
    resp = lat["respiratory"][row]
    renal = lat["renal"][row]
    gly = lat["glycaemic"][row]
    infl = lat["inflammation"][row]

    chart = _Events()
    caregivers = rng.integers(10000, 99999, 400)

    def add_chart(mask, itemid, value_text, valuenum, uom, minutes_offset=None):
        idx = np.flatnonzero(mask)
        ct = charttime[idx] if minutes_offset is None else charttime[idx] + minutes_offset[idx].astype("timedelta64[m]")
        chart.add(row=row[idx], charttime=ct, itemid=np.full(len(idx), itemid),
                  value=value_text[idx] if isinstance(value_text, np.ndarray) else _same_text(value_text, len(idx)),
                  valuenum=np.asarray(valuenum, dtype=float)[idx] if np.ndim(valuenum) else np.full(len(idx), valuenum),
                  valueuom=_same_text(uom, len(idx)))

    # heart rate
    hr = np.clip(np.round(86 + 9 * sev + 4 * infl + 3 * resp + rng.normal(0, 6, m)), 25, 220)
    obs_hr = rng.random(m) < 0.95
    add_chart(obs_hr, v.HR, _fmt(hr, "%d"), hr, "bpm")
    # blood pressure: arterial line or cuff
    sbp = np.clip(np.round(121 - 11 * sev + rng.normal(0, 10, m)), 50, 230)
    dbp = np.clip(np.round(61 - 6 * sev + rng.normal(0, 7, m)), 20, 140)
    mbp = np.round((sbp + 2 * dbp) / 3 + rng.normal(0, 2, m))
    obs_bp = rng.random(m) < 0.92
    art = art_line[row]
    for (item_art, item_ni, vals) in ((v.SBP_ART, v.SBP_NI, sbp), (v.DBP_ART, v.DBP_NI, dbp), (v.MBP_ART, v.MBP_NI, mbp)):
        add_chart(obs_bp & art, item_art, _fmt(vals, "%d"), vals, "mmHg")
        add_chart(obs_bp & ~art, item_ni, _fmt(vals, "%d"), vals, "mmHg")
    # respiratory rate
    rr = np.clip(np.round(19.5 + 2.5 * sev + 2.5 * resp + rng.normal(0, 3, m)), 4, 60)
    add_chart(rng.random(m) < 0.93, v.RESP, _fmt(rr, "%d"), rr, "insp/min")
    # saturation: the truth (SaO2) and the pulse oximeter's reading of it (SpO2)
    sao2 = np.clip(96.5 - 2.0 * resp - 1.2 * np.maximum(resp, 0) ** 2 + rng.normal(0, 0.8, m), 70, 100)
    spo2 = sao2 + np.where(black[row], spo2_overread(sao2), 0.0) + rng.normal(0, 1.0, m)
    spo2 = np.clip(np.round(spo2), 60, 100)
    add_chart(rng.random(m) < 0.92, v.SPO2, _fmt(spo2, "%d"), spo2, "%")
    blood_gas = art & (slot_mod % 6 == 2) & (rng.random(m) < 0.9)
    blood_gas |= ~art & (slot_mod % 12 == 2) & (rng.random(m) < 0.25)
    sao2_r = np.round(sao2)
    add_chart(blood_gas & art, v.SAO2_CHART, _fmt(sao2_r, "%d"), sao2_r, "%")
    ph = np.round(7.38 - 0.04 * sev - 0.03 * renal + rng.normal(0, 0.025, m), 2)
    add_chart(blood_gas & art & (rng.random(m) < 0.8), v.PH_ART_CHART, _fmt(ph, "%.2f"), ph, "units")
    # temperature, partly charted in Fahrenheit
    temp_c = np.round(36.9 + 0.55 * infl + rng.normal(0, 0.3, m), 1)
    obs_t = (slot_mod % 4 == 0) & (rng.random(m) < 0.9)
    fahrenheit = rng.random(m) < 0.3
    temp_f = np.round(temp_c * 9 / 5 + 32, 1)
    add_chart(obs_t & ~fahrenheit, v.TEMP_C, _fmt(temp_c, "%.1f"), temp_c, "°C")
    add_chart(obs_t & fahrenheit, v.TEMP_F, _fmt(temp_f, "%.1f"), temp_f, "°F")
    # GCS components as MetaVision text + score
    vent = device[row]
    q = -0.9 * sev + rng.normal(0, 0.6, m) - 0.6 * vent
    eye = 1 + (q > -1.7).astype(int) + (q > -1.2) + (q > -0.7)
    verbal = 1 + (q > -1.8).astype(int) + (q > -1.4) + (q > -1.0) + (q > -0.5)
    motor = 1 + (q > -2.5).astype(int) + (q > -2.2) + (q > -1.9) + (q > -1.5) + (q > -1.0)
    obs_gcs = (slot_mod % 4 == 1) & (rng.random(m) < 0.85)
    add_chart(obs_gcs, v.GCS_EYE, np.array([v.GCS_EYE_TEXT[x] for x in eye], object), eye, "")
    verbal_text = np.array([v.GCS_VERBAL_TEXT[x] for x in verbal], object)
    verbal_text[vent] = v.GCS_VERBAL_ETT
    add_chart(obs_gcs, v.GCS_VERBAL, verbal_text, np.where(vent, 1, verbal), "")
    add_chart(obs_gcs, v.GCS_MOTOR, np.array([v.GCS_MOTOR_TEXT[x] for x in motor], object), motor, "")
    # capillary refill: text only
    abnormal = (sev + rng.normal(0, 0.5, m)) > 1.2
    cr_text = np.where(abnormal, v.CAP_REFILL_TEXT[1], v.CAP_REFILL_TEXT[0]).astype(object)
    obs_cr = (slot_mod % 8 == 3) & (rng.random(m) < 0.5)
    left = rng.random(m) < 0.2
    add_chart(obs_cr & ~left, v.CAP_REFILL_R, cr_text, np.nan, "")
    add_chart(obs_cr & left, v.CAP_REFILL_L, cr_text, np.nan, "")
    # glucose (chart)
    glucose = np.round(125 * np.exp(0.3 * gly + rng.normal(0, 0.12, m)))
    obs_glu = (slot_mod % 6 == 4) & (rng.random(m) < 0.6)
    which = rng.random(m)
    for item, lo, hi in ((v.GLUCOSE_FINGER, 0, 0.7), (v.GLUCOSE_SERUM, 0.7, 0.85), (v.GLUCOSE_WHOLE, 0.85, 1.01)):
        add_chart(obs_glu & (which >= lo) & (which < hi), item, _fmt(glucose, "%d"), glucose, "mg/dL")
    # FiO2 in percent while ventilated
    fio2 = np.clip(np.round((40 + 12 * np.maximum(resp, 0) + rng.normal(0, 5, m)) / 5) * 5, 30, 100)
    add_chart(vent & (slot_mod % 4 == 2) & (rng.random(m) < 0.9), v.FIO2, _fmt(fio2, "%d"), fio2, "")
    # weight and height once, at the first slot, partly in lbs / inches
    first = k == 0
    weight = np.round(np.clip(82 + 22 * rng.standard_normal(m), 38, 220), 1)
    in_lbs = rng.random(m) < 0.15
    lbs = np.round(weight / 0.453592, 1)
    add_chart(first & ~in_lbs, v.WEIGHT_KG, _fmt(weight, "%.1f"), weight, "kg")
    add_chart(first & in_lbs, v.WEIGHT_LBS, _fmt(lbs, "%.1f"), lbs, "")
    height = np.round(np.clip(170 + 10 * rng.standard_normal(m), 140, 205))
    has_height = first & (rng.random(m) < 0.6)
    in_inches = rng.random(m) < 0.15
    inches = np.round(height / 2.54)
    add_chart(has_height & ~in_inches, v.HEIGHT_CM, _fmt(height, "%d"), height, "cm")
    add_chart(has_height & in_inches, v.HEIGHT_IN, _fmt(inches, "%d"), inches, "Inch")

    # garbage (out of every valid range) and duplicates within the hour
    garbage = rng.random(m) < 0.0008
    add_chart(garbage & (which < 0.5), v.HR, _fmt(np.full(m, 999.0), "%d"), np.full(m, 999.0), "bpm")
    add_chart(garbage & (which >= 0.5), v.SPO2, _fmt(np.full(m, 150.0), "%d"), np.full(m, 150.0), "%")
    hr2 = np.clip(hr + rng.normal(0, 4, m).round(), 25, 220)
    dup = obs_hr & (rng.random(m) < 0.02)
    add_chart(dup, v.HR, _fmt(hr2, "%d"), hr2, "bpm", minutes_offset=rng.integers(1, 9, m))
    same_time = obs_hr & ~dup & (rng.random(m) < 0.005)
    add_chart(same_time, v.HR, _fmt(hr2, "%d"), hr2, "bpm")

    c = chart.frame()
    nc = len(c["row"])
    chartevents = {
        "subject_id": stays["subject_id"].to_numpy()[c["row"]],
        "hadm_id": stays["hadm_id"].to_numpy()[c["row"]],
        "stay_id": stays["stay_id"].to_numpy()[c["row"]],
        "caregiver_id": caregivers[rng.integers(0, len(caregivers), nc)],
        "charttime": c["charttime"],
        "storetime": c["charttime"] + rng.integers(1, 60, nc).astype("timedelta64[m]"),
        "itemid": c["itemid"],
        "value": c["value"],
        "valuenum": c["valuenum"],
        "valueuom": c["valueuom"],
        "warning": np.zeros(nc, np.int8),
        "stay_row": c["row"],  # not a column: lets the writer interleave these rows with other rows per stay
    }

    # ---- labs ------------------------------------------------------------------------------------
    labs = _Events()

    def add_lab(mask, itemid, values, fmt, times=None):
        idx = np.flatnonzero(mask)
        labs.add(row=row[idx], charttime=(charttime if times is None else times)[idx],
                 itemid=np.full(len(idx), itemid), value=_fmt(values[idx], fmt),
                 valuenum=np.asarray(values, float)[idx])

    lab_time = charttime + rng.integers(-20, 0, m).astype("timedelta64[m]")
    lactate = np.round(1.5 * np.exp(0.35 * sev + rng.normal(0, 0.15, m)), 1)
    so2 = np.clip(np.round(sao2 + rng.normal(0, 0.3, m)), 60, 100)
    glucose_bg = np.round(glucose * np.exp(rng.normal(0, 0.04, m)))
    add_lab(blood_gas, v.LAB_PH, ph, "%.2f", lab_time)
    add_lab(blood_gas & art, v.LAB_SO2, so2, "%d", lab_time)
    add_lab(blood_gas & (rng.random(m) < 0.7), v.LAB_GLUCOSE_BG, glucose_bg, "%d", lab_time)
    add_lab(blood_gas & (rng.random(m) < 0.8), v.LAB_LACTATE, lactate, "%.1f", lab_time)
    chem = (slot_mod % 12 == 5) & (rng.random(m) < 0.9)
    creat = np.round(1.0 * np.exp(0.45 * renal + rng.normal(0, 0.08, m)), 1)
    glucose_chem = np.round(glucose * np.exp(rng.normal(0, 0.05, m)))
    add_lab(chem, v.LAB_GLUCOSE_CHEM, glucose_chem, "%d", lab_time)
    add_lab(chem, v.LAB_CREATININE, creat, "%.1f", lab_time)
    wbc = np.round(np.clip(9 + 3 * infl + rng.normal(0, 1.5, m), 0.5, 60), 1)
    add_lab((slot_mod % 24 == 5) & (rng.random(m) < 0.9), v.LAB_WBC, wbc, "%.1f", lab_time)
    # urine chemistry: same labels, fluid 'Urine' — must not enter the blood glucose / pH channels
    urine = (k == 10) & (rng.random(m) < 0.3)
    add_lab(urine, v.LAB_URINE_GLUCOSE, rng.choice([0.0, 0.0, 100.0, 300.0, 1000.0], m), "%d", lab_time)
    add_lab(urine, v.LAB_URINE_PH, np.round(rng.uniform(5.0, 8.0, m) * 2) / 2, "%.1f", lab_time)
    # a chemistry panel early in the admission, before the ICU (outside the observation window)
    pre_icu = first & ((intime - admittime)[row] > np.timedelta64(3 * HOUR, "s"))
    pre_time = admittime[row] + np.timedelta64(HOUR, "s")
    add_lab(pre_icu, v.LAB_GLUCOSE_CHEM, glucose_chem, "%d", pre_time)
    add_lab(pre_icu, v.LAB_CREATININE, creat, "%.1f", pre_time)

    lb = labs.frame()
    nl = len(lb["row"])
    order = np.lexsort((lb["itemid"], lb["charttime"], stays["subject_id"].to_numpy()[lb["row"]]))
    lb = {key: val[order] for key, val in lb.items()}
    item = lb["itemid"]
    lows = np.array([v.LAB_REFERENCE[i][0] if v.LAB_REFERENCE[i][0] is not None else np.nan for i in item], float)
    highs = np.array([v.LAB_REFERENCE[i][1] if v.LAB_REFERENCE[i][1] is not None else np.nan for i in item], float)
    vals = lb["valuenum"]
    abnormal_flag = np.where((vals < lows) | (vals > highs), "abnormal", "").astype(object)
    hadm = stays["hadm_id"].to_numpy()[lb["row"]].astype(float)
    hadm[rng.random(nl) < 0.02] = np.nan
    panel_key = pd.factorize(pd.Series(lb["row"]).astype(str) + "|" + pd.Series(lb["charttime"]).astype(str))[0]
    specimen_pool = specimen_id_base + np.cumsum(rng.integers(1, 40, panel_key.max() + 1))
    providers = np.array(["P" + "".join(rng.choice(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"), 5))
                          for _ in range(300)], dtype=object)
    order_provider = providers[rng.integers(0, len(providers), nl)]
    order_provider[rng.random(nl) < 0.4] = ""
    labevents = {
        "labevent_id": first_labevent_id + np.arange(nl),
        "subject_id": stays["subject_id"].to_numpy()[lb["row"]],
        "hadm_id": hadm,
        "specimen_id": rng.permutation(specimen_pool)[panel_key],
        "itemid": item,
        "order_provider_id": order_provider,
        "charttime": lb["charttime"],
        "storetime": lb["charttime"] + rng.integers(15, 120, nl).astype("timedelta64[m]"),
        "value": lb["value"],
        "valuenum": vals,
        "valueuom": np.array([v.LAB_UNITS[i] for i in item], dtype=object),
        "ref_range_lower": lows,
        "ref_range_upper": highs,
        "flag": abnormal_flag,
        "priority": np.where(rng.random(nl) < 0.6, "STAT", "ROUTINE").astype(object),
        "comments": _same_text("", nl),
        "stay_row": lb["row"],
    }

    # ---- urine output --------------------------------------------------------------------------
    foley = (rng.random(n) < 0.85)[row]
    urine_ml = np.clip(np.round(80 * np.exp(-0.45 * renal + rng.normal(0, 0.35, m)) / 5) * 5, 0, 1500)
    obs_uo = np.where(foley, rng.random(m) < 0.85, (slot_mod % 4 == 0) & (rng.random(m) < 0.7))
    idx = np.flatnonzero(obs_uo)
    uo_time = charttime[idx]
    outputevents = {
        "subject_id": stays["subject_id"].to_numpy()[row[idx]],
        "hadm_id": stays["hadm_id"].to_numpy()[row[idx]],
        "stay_id": stays["stay_id"].to_numpy()[row[idx]],
        "caregiver_id": caregivers[rng.integers(0, len(caregivers), len(idx))],
        "charttime": uo_time,
        "storetime": uo_time + rng.integers(1, 90, len(idx)).astype("timedelta64[m]"),
        "itemid": np.where(foley[idx], v.URINE_FOLEY, v.URINE_VOID),
        "value": urine_ml[idx],
        "valueuom": _same_text("ml", len(idx)),
    }
    return chartevents, labevents, outputevents
