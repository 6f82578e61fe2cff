"""A tiny hand-written MIMIC-IV v2.2 + MIMIC-CXR-JPG tree whose right answers the tests spell out.

Subjects (cohort stays marked *):
  10000001  *30000001 (60 h, CXR pairing cases, most hourly cases)  *30000002 (122 h, died in ICU)
  10000002   30000003 under 18                     10000003  30000004 stay of 30 h
  10000004   30000005 organ-donor admission        10000005 *30000006 ICD-10 codes, died after the ICU
  10000006  *30000007 15 d                          10000007 *30000008 anchor_age 91, exactly 48 h
  10000008  *30000009 age 80                        10000009 *30000010 PORTUGUESE
  10000010  *30000011 SOUTH AMERICAN                10000011 *30000012 AMERICAN INDIAN/ALASKA NATIVE
CXR-only subjects 10000020 and 10000021 (and 10000002) give the encoder its non-cohort images.

``build_tree(root, version="3.1")`` writes the v3.1 flavour of the same tree under
``mimiciv/3.1``: full language names, re-coded insurance (Private, No charge, blank), most hosp
tables as plain ``.csv``, and two more paired images of odd formats (an RGB JPEG of 37 x 91 px for
30000007 and 16-bit content for 30000008). Its right answers are in test_prep_versions.py.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

PATIENTS_HEADER = "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod"
ADMISSIONS_HEADER = ("subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,"
                     "admission_location,discharge_location,insurance,language,marital_status,race,edregtime,"
                     "edouttime,hospital_expire_flag")
ICUSTAYS_HEADER = "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los"
CHART_HEADER = "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,valueuom,warning"
LAB_HEADER = ("labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,charttime,storetime,value,"
              "valuenum,valueuom,ref_range_lower,ref_range_upper,flag,priority,comments")
DIAG_HEADER = "subject_id,hadm_id,seq_num,icd_code,icd_version"
OUTPUT_HEADER = "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valueuom"
DLAB_HEADER = "itemid,label,fluid,category"
META_HEADER = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
               "StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
               "PatientOrientationCodeSequence_CodeMeaning")
FINDINGS = ("Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,Lung Lesion,"
            "Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices")
CHEX_HEADER = "subject_id,study_id," + FINDINGS

PATIENTS = [
    "10000001,F,60,2150,2011 - 2013,",
    "10000002,M,17,2150,2011 - 2013,",
    "10000003,F,50,2150,2014 - 2016,",
    "10000004,M,45,2150,2014 - 2016,2150-05-01",
    "10000005,M,35,2148,2014 - 2016,2150-06-10",
    "10000006,F,45,2150,2017 - 2019,",
    "10000007,M,91,2148,2008 - 2010,",
    "10000008,F,79,2150,2011 - 2013,",
    "10000009,M,40,2150,2011 - 2013,",
    "10000010,F,39,2150,2014 - 2016,",
    "10000011,M,59,2150,2014 - 2016,",
]

ADMISSIONS = [
    "10000001,20000001,2150-01-01 08:00:00,2150-01-10 12:00:00,,EW EMER.,P1,EMERGENCY ROOM,HOME,Medicare,"
    "ENGLISH,MARRIED,WHITE - RUSSIAN,,,0",
    "10000001,20000002,2150-03-01 00:00:00,2150-03-06 06:00:00,2150-03-06 06:00:00,URGENT,P1,EMERGENCY ROOM,"
    "DIED,Medicare,ENGLISH,MARRIED,WHITE - RUSSIAN,,,1",
    "10000002,20000003,2150-02-01 00:00:00,2150-02-08 00:00:00,,URGENT,P2,EMERGENCY ROOM,HOME,Other,ENGLISH,"
    "SINGLE,WHITE,,,0",
    "10000003,20000004,2150-02-01 00:00:00,2150-02-08 00:00:00,,URGENT,P2,EMERGENCY ROOM,HOME,Other,ENGLISH,"
    "SINGLE,WHITE,,,0",
    "10000004,20000005,2150-05-02 00:00:00,2150-05-01 00:00:00,2150-05-01 00:00:00,EW EMER.,P3,EMERGENCY ROOM,"
    "DIED,Other,ENGLISH,MARRIED,WHITE,,,1",
    "10000005,20000006,2150-06-01 00:00:00,2150-06-10 00:00:00,2150-06-10 00:00:00,DIRECT EMER.,P4,"
    "EMERGENCY ROOM,DIED,Medicaid,?,,BLACK/CAPE VERDEAN,,,1",
    "10000006,20000007,2150-07-01 00:00:00,2150-07-20 00:00:00,,ELECTIVE,P5,PHYSICIAN REFERRAL,HOME,Other,"
    "ENGLISH,SINGLE,HISPANIC/LATINO - CUBAN,,,0",
    "10000007,20000008,2150-07-01 00:00:00,2150-07-09 00:00:00,,URGENT,P6,EMERGENCY ROOM,HOME,Medicare,"
    "ENGLISH,WIDOWED,ASIAN - KOREAN,,,0",
    "10000008,20000009,2151-01-05 00:00:00,2151-01-20 00:00:00,,URGENT,P7,EMERGENCY ROOM,HOME,Medicare,"
    "ENGLISH,WIDOWED,PATIENT DECLINED TO ANSWER,,,0",
    "10000009,20000010,2150-08-01 00:00:00,2150-08-09 00:00:00,,URGENT,P8,EMERGENCY ROOM,HOME,Medicare,"
    "ENGLISH,DIVORCED,PORTUGUESE,,,0",
    "10000010,20000011,2150-09-01 00:00:00,2150-09-12 00:00:00,,URGENT,P9,EMERGENCY ROOM,HOME,Other,"
    "ENGLISH,SINGLE,SOUTH AMERICAN,,,0",
    "10000011,20000012,2150-10-01 00:00:00,2150-10-09 00:00:00,,URGENT,P9,EMERGENCY ROOM,HOME,Other,"
    "ENGLISH,MARRIED,AMERICAN INDIAN/ALASKA NATIVE,,,0",
]

ICUSTAYS = [
    "10000001,20000001,30000001,MICU,MICU,2150-01-01 10:00:00,2150-01-03 22:00:00,2.5",
    "10000001,20000002,30000002,MICU,MICU,2150-03-01 02:00:00,2150-03-06 04:00:00,5.083333333333333",
    "10000002,20000003,30000003,MICU,MICU,2150-02-01 00:00:00,2150-02-04 00:00:00,3.0",
    "10000003,20000004,30000004,MICU,MICU,2150-02-01 00:00:00,2150-02-02 06:00:00,1.25",
    "10000004,20000005,30000005,MICU,MICU,2150-04-28 00:00:00,2150-05-01 00:00:00,3.0",
    "10000005,20000006,30000006,MICU,MICU,2150-06-01 12:00:00,2150-06-05 16:00:00,4.166666666666667",
    "10000006,20000007,30000007,SICU,SICU,2150-07-01 06:00:00,2150-07-16 06:00:00,15.0",
    "10000007,20000008,30000008,CCU,CCU,2150-07-01 06:00:00,2150-07-03 06:00:00,2.0",
    "10000008,20000009,30000009,CCU,CCU,2151-01-05 06:00:00,2151-01-12 18:00:00,7.5",
    "10000009,20000010,30000010,CCU,CCU,2150-08-01 06:00:00,2150-08-04 06:00:00,3.0",
    "10000010,20000011,30000011,CCU,CCU,2150-09-01 06:00:00,2150-09-07 06:00:00,6.0",
    "10000011,20000012,30000012,CCU,CCU,2150-10-01 06:00:00,2150-10-03 10:48:00.500,2.2",   # milliseconds
]

# stay 30000001 starts 2150-01-01 10:00; (charttime, storetime, itemid, value, valuenum)
STAY1_CHART = [
    ("2150-01-01 10:30:00", "2150-01-01 10:35:00", 220045, "80", "80"),
    ("2150-01-01 10:50:00", "2150-01-01 10:51:00", 220045, "90", "90"),          # hour 0: 90 (later charttime)
    ("2150-01-01 11:15:00", "2150-01-01 11:40:00", 220045, "95", "95"),          # hour 1: 95 (later storetime)
    ("2150-01-01 11:15:00", "2150-01-01 11:20:00", 220045, "100", "100"),
    ("2150-01-01 12:00:00", "2150-01-01 12:05:00", 220045, "72", "72"),          # hour 2: 72 (larger value)
    ("2150-01-01 12:00:00", "2150-01-01 12:05:00", 220045, "70", "70"),
    ("2150-01-03 09:59:00", "2150-01-03 10:01:00", 220045, "110", "110"),        # hour 47
    ("2150-01-03 10:00:00", "2150-01-03 10:01:00", 220045, "120", "120"),        # hour 48: outside
    ("2150-01-01 10:10:00", "2150-01-01 10:12:00", 220179, "130", "130"),
    ("2150-01-01 10:10:00", "2150-01-01 10:12:00", 220050, "110", "110"),        # sbp hour 0: arterial wins
    ("2150-01-01 14:00:00", "2150-01-01 14:05:00", 223761, "98.6", "98.6"),      # temperature hour 4: 37.0 C
    ("2150-01-01 15:00:00", "2150-01-01 15:05:00", 223762, "50", "50"),          # hour 5: out of range
    ("2150-01-01 16:10:00", "2150-01-01 16:15:00", 223762, "36.5", "36.5"),      # hour 6: 36.5 kept
    ("2150-01-01 16:20:00", "2150-01-01 16:25:00", 223762, "60", "60"),          # hour 6: out of range
    ("2150-01-01 10:00:00", "2150-01-01 10:02:00", 223835, "40", "40"),          # fio2 hour 0: 0.4
    ("2150-01-01 13:30:00", "2150-01-01 13:32:00", 223835, "0.5", "0.5"),        # fio2 hour 3: 0.5
    ("2150-01-01 10:05:00", "2150-01-01 10:06:00", 226531, "220", "220"),        # weight hour 0: 99.79 kg
    ("2150-01-01 10:05:00", "2150-01-01 10:06:00", 226707, "70", "70"),          # height hour 0: 177.8 cm
    ("2150-01-01 12:30:00", "2150-01-01 12:31:00", 220277, "0.97", "0.97"),      # spo2 hour 2: 97
    ("2150-01-01 13:10:00", "2150-01-01 13:11:00", 220227, "95", "95"),          # sao2 chart hour 3
    ("2150-01-01 18:00:00", "2150-01-01 18:01:00", 220739, "To Speech", "3"),
    ("2150-01-01 18:00:00", "2150-01-01 18:01:00", 223900, "Confused", "4"),
    ("2150-01-01 18:00:00", "2150-01-01 18:01:00", 223901, "Obeys Commands", "6"),   # hour 8: total 13
    ("2150-01-01 20:00:00", "2150-01-01 20:01:00", 220739, "Spontaneously", ""),
    ("2150-01-01 20:00:00", "2150-01-01 20:01:00", 223900, "No Response-ETT", "1"),
    ("2150-01-01 20:00:00", "2150-01-01 20:01:00", 223901, "Localizes Pain", "5"),   # hour 10: total 15
    ("2150-01-01 22:00:00", "2150-01-01 22:01:00", 220739, "To Pain", "2"),          # hour 12: total NaN
    ("2150-01-01 10:20:00", "2150-01-01 10:21:00", 223951, "Normal <3 secs", ""),    # cap refill hour 0: 0
    ("2150-01-01 11:20:00", "2150-01-01 11:21:00", 224308, "Abnormal >3 secs", ""),  # hour 1: 1
    ("2150-01-01 12:10:00", "2150-01-01 12:11:00", 225664, "150", "150"),            # glucose chart hour 2
    ("2150-01-01 14:20:00", "2150-01-01 14:21:00", 223830, "7.30", "7.30"),          # ph chart hour 4
    ("2150-01-01 09:00:00", "2150-01-01 09:01:00", 220045, "60", "60"),              # before intime
]

STAY6_CHART = [
    ("2150-06-01 12:30:00", "2150-06-01 12:31:00", 220045, "101", "101"),
    ("2150-06-01 13:30:00", "2150-06-01 13:31:00", 220045, "___", ""),               # unreadable: dropped
]

# (subject_id, hadm_id or "", itemid, charttime, storetime, valuenum)
LABS = [
    (10000001, "", 50931, "2150-01-01 12:40:00", "2150-01-01 13:00:00.250", 180),     # glucose hour 2: 180
    (10000001, "", 51478, "2150-01-01 12:50:00", "2150-01-01 13:10:00", 500),         # urine glucose: ignored
    (10000001, 20000001, 50820, "2150-01-01 14:30:00", "2150-01-01 14:45:00", 7.35),  # ph hour 4: 7.35
    (10000001, 20000001, 51491, "2150-01-01 14:40:00", "2150-01-01 14:50:00", 6.0),   # urine ph: ignored
    (10000001, "", 50817, "2150-01-01 13:40:00", "2150-01-01 13:50:00", 93),          # sao2 hour 3: 93
    (10000001, "", 50931, "2150-01-01 09:30:00", "2150-01-01 09:50:00", 111),         # before intime
    (10000001, "", 50931, "2150-03-01 05:00:00", "2150-03-01 05:30:00", 200),         # stay 30000002 hour 3
    # extended map only (stay 30000001, hour 5)
    (10000001, "", 50912, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 1.4),         # creatinine
    (10000001, "", 51006, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 22),          # BUN
    (10000001, 20000001, 50813, "2150-01-01 15:05:00", "2150-01-01 15:10:00", 2.1),   # lactate
    (10000001, "", 51301, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 11.5),        # WBC: priority wins
    (10000001, "", 51300, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 9.9),
    (10000001, "", 51222, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 9.8),         # hemoglobin
    (10000001, "", 51265, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 210),         # platelets
    (10000001, "", 50983, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 138),
    (10000001, "", 50824, "2150-01-01 15:40:00", "2150-01-01 15:45:00", 135),         # sodium: later wins
    (10000001, "", 50971, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 4.1),         # potassium
    (10000001, "", 50882, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 24),          # bicarbonate
    (10000001, "", 50885, "2150-01-01 15:10:00", "2150-01-01 15:30:00", 0.8),         # bilirubin
    (10000001, "", 50912, "2150-01-01 16:10:00", "2150-01-01 16:30:00", 400),         # creatinine: out of range
]

D_LABITEMS = [
    "50809,Glucose,Blood,Blood Gas",
    "50817,Oxygen Saturation,Blood,Blood Gas",
    "50820,pH,Blood,Blood Gas",
    "50931,Glucose,Blood,Chemistry",
    "51478,Glucose,Urine,Hematology",
    "51491,pH,Urine,Hematology",
    "50811,Hemoglobin,Blood,Blood Gas",
    "50813,Lactate,Blood,Blood Gas",
    "50822,\"Potassium, Whole Blood\",Blood,Blood Gas",
    "50824,\"Sodium, Whole Blood\",Blood,Blood Gas",
    "50882,Bicarbonate,Blood,Chemistry",
    "50885,\"Bilirubin, Total\",Blood,Chemistry",
    "50912,Creatinine,Blood,Chemistry",
    "50971,Potassium,Blood,Chemistry",
    "50983,Sodium,Blood,Chemistry",
    "51006,Urea Nitrogen,Blood,Chemistry",
    "51222,Hemoglobin,Blood,Hematology",
    "51265,Platelet Count,Blood,Hematology",
    "51300,WBC Count,Blood,Hematology",
    "51301,White Blood Cells,Blood,Hematology",
]

# icu/outputevents of stay 30000001 (intime 2150-01-01 10:00): (charttime, storetime, itemid, value)
OUTPUTS = [
    ("2150-01-01 09:30:00", "2150-01-01 09:31:00", 226559, "70"),         # before intime
    ("2150-01-01 10:30:00", "2150-01-01 10:31:00", 226559, "100"),        # Foley
    ("2150-01-01 10:45:00", "2150-01-01 10:46:00", 226560, "50"),         # Void: hour 0 = 150
    ("2150-01-01 11:30:00", "2150-01-01 11:31:00", 226559, "200"),
    ("2150-01-01 11:40:00", "2150-01-01 11:41:00", 227488, "30"),         # GU irrigant in: -30
    ("2150-01-01 11:50:00", "2150-01-01 11:51:00", 227489, "80"),         # irrigant/urine out: hour 1 = 250
    ("2150-01-01 12:20:00", "2150-01-01 12:21:00", 226559, "99999"),      # out of range: dropped, counted
    ("2150-01-01 12:30:00", "2150-01-01 12:31:00", 226559, "40"),         # hour 2 = 40
    ("2150-01-01 13:00:00", "2150-01-01 13:00:49.983", 226561, "60"),     # storetime with ms: hour 3 = 60
    ("2150-01-01 14:00:00", "2150-01-01 14:01:00", 226588, "500"),        # chest tube: not urine
]

DIAGNOSES = [
    "10000001,20000001,1,0389,9",      # septicemia (leading zero)
    "10000001,20000001,2,4019,9",      # essential hypertension
    "10000001,20000001,3,5849,9",      # acute renal failure
    "10000001,20000002,1,42731,9",     # dysrhythmia
    "10000005,20000006,1,J9601,10",    # respiratory failure: only by the extended ICD-10 rule
    "10000005,20000006,2,I10,10",      # essential hypertension (exact)
    "10000006,20000007,1,5849,10",     # an ICD-9 code string marked ICD-10: matches nothing
]


def dicom(n: int) -> str:
    return f"{n:08x}-00000000-00000000-00000000-00000000"


# (dicom number, subject, study, view, StudyDate, StudyTime, pixel value)
CXR_IMAGES = [
    (1, 10000001, 50000001, "PA", 21500101, "120000.5", 50),       # inside the window, earlier
    (2, 10000001, 50000002, "AP", 21500102, "80556.875", 200),     # inside, latest frontal: wins
    (3, 10000001, 50000002, "LATERAL", 21500102, "80556.875", 120),
    (4, 10000001, 50000003, "LATERAL", 21500102, "200000", 130),   # later but lateral
    (5, 10000001, 50000004, "AP", 21500103, "110000", 140),        # after the window
    (6, 10000005, 50000005, "AP", 21500601, "93000", 150),         # before intime
    (7, 10000005, 50000006, "PA", 21500602, "101010", 160),        # tie on time: lower dicom_id loses
    (8, 10000005, 50000006, "PA", 21500602, "101010", 170),        # tie on time: wins
    (20, 10000020, 50000020, "PA", 21600101, "101010", 60),        # non-cohort (encoder)
    (21, 10000020, 50000020, "LATERAL", 21600101, "101010", 61),
    (22, 10000020, 50000021, "AP", 21600301, "91010", 62),
    (23, 10000021, 50000022, "AP", 21700101, "101010", 63),
    (24, 10000002, 50000023, "AP", 21500202, "101010", 64),        # under-18 subject: not in cohort
    # later in stay 30000001's window than the paired AP, but not frontal (frontal = AP or PA exactly)
    (9, 10000001, 50000007, "", 21500102, "150000", 90),            # blank ViewPosition
    (10, 10000001, 50000007, "AP AXIAL", 21500102, "160000", 91),
    (11, 10000001, 50000008, "PA LLD", 21500102, "170000", 92),
    (12, 10000001, 50000008, "AP LLD", 21500102, "171000", 93),
    (13, 10000001, 50000008, "LL", 21500102, "172000", 94),
    (14, 10000001, 50000008, "SWIMMERS", 21500102, "173000", 95),
    (15, 10000001, 50000008, "XTABLE LATERAL", 21500102, "174000", 96),
]

# v3.1 flavour only: paired images in odd formats (written by _write_odd_images)
CXR_IMAGES_V31 = [
    (30, 10000006, 50000030, "AP", 21500701, "93000", 0),          # 30000007: RGB JPEG 37 x 91, at 3.5 h
    (31, 10000007, 50000031, "PA", 21500702, "53000.1", 0),        # 30000008: 16-bit content, at 23.5 h
]

# v3.1 admissions values: hadm_id -> (insurance, language)
V31_ADMISSIONS = {
    20000001: ("Medicare", "English"), 20000002: ("Medicare", "English"),
    20000003: ("Private", "English"), 20000004: ("Private", "English"),
    20000005: ("Other", "English"), 20000006: ("Medicaid", "Spanish"),
    20000007: ("Private", "English"), 20000008: ("Medicare", "Chinese"),
    20000009: ("Medicare", "English"), 20000010: ("No charge", "Portuguese"),
    20000011: ("", "English"), 20000012: ("Other", ""),
}

CHEXPERT = [
    "10000001,50000001,,1.0,,,,,,,,,,,,",
    "10000020,50000020,1.0,0.0,-1.0,,,,,,,,,,,1.0",
    "10000020,50000021,0.0,1.0,,,,,,,,,,,,",
    "10000021,50000022,,,,,,,,,1.0,,,,,",
    "10000002,50000023,-1.0,,,,,,,,,,,,,",
]


def _write(path: Path, header: str, rows: list[str], gz: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([header, *rows]) + "\n"
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wt", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text)


def _chart_rows(subject: int, hadm: int, stay: int, events) -> list[str]:
    return [f"{subject},{hadm},{stay},1,{ct},{st},{item},{value},{num},,0" for ct, st, item, value, num in events]


def _lab_rows() -> list[str]:
    return [f"{i + 1},{s},{h},{900 + i},{item},,{ct},{st},{v},{v},,,,,ROUTINE,"
            for i, (s, h, item, ct, st, v) in enumerate(LABS)]


def write_jpeg(path: Path, value: int, size: tuple[int, int] = (64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0]), value, dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path, format="JPEG", quality=95)


def image_path(cxr_root: Path, subject: int, study: int, n: int) -> Path:
    s = str(subject)
    return cxr_root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{study}" / f"{dicom(n)}.jpg"


def _v31_admission(row: str) -> str:
    fields = row.split(",")
    fields[9], fields[10] = V31_ADMISSIONS[int(fields[1])]
    return ",".join(fields)


def _write_odd_images(cxr: Path) -> None:
    rgb = np.zeros((91, 37, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1] = 200, 100                       # gray 0.299*200 + 0.587*100 = 118.5
    path = image_path(cxr, 10000006, 50000030, 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path, format="JPEG", quality=95)
    deep = np.full((60, 80), 1000, dtype=np.uint16)
    deep[:, 40:] = 3000                                       # stretched: left half 0, right half 255
    path = image_path(cxr, 10000007, 50000031, 31)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(deep).save(path, format="PNG")           # 16-bit content under the .jpg name


def build_tree(root: Path, version: str = "2.2") -> tuple[Path, Path]:
    """Write the tree under ``root``; return ``(mimic_root, cxr_root)``."""
    v31 = version == "3.1"
    mimic = root / "mimiciv" / version
    admissions = [_v31_admission(r) for r in ADMISSIONS] if v31 else ADMISSIONS
    _write(mimic / "hosp" / "patients.csv", PATIENTS_HEADER, PATIENTS, gz=not v31)
    _write(mimic / "hosp" / "admissions.csv", ADMISSIONS_HEADER, admissions, gz=not v31)
    _write(mimic / "icu" / "icustays.csv", ICUSTAYS_HEADER, ICUSTAYS)
    chart = (_chart_rows(10000001, 20000001, 30000001, STAY1_CHART)
             + _chart_rows(10000005, 20000006, 30000006, STAY6_CHART))
    _write(mimic / "icu" / "chartevents.csv", CHART_HEADER, chart)
    _write(mimic / "hosp" / "labevents.csv", LAB_HEADER, _lab_rows())
    _write(mimic / "hosp" / "d_labitems.csv", DLAB_HEADER, D_LABITEMS, gz=False)   # a plain .csv
    _write(mimic / "hosp" / "diagnoses_icd.csv", DIAG_HEADER, DIAGNOSES, gz=not v31)
    outputs = [f"10000001,20000001,30000001,7,{ct},{st},{item},{v},ml" for ct, st, item, v in OUTPUTS]
    _write(mimic / "icu" / "outputevents.csv", OUTPUT_HEADER, outputs)
    cxr = root / "mimic-cxr-jpg" / "2.0.0"
    images = CXR_IMAGES + (CXR_IMAGES_V31 if v31 else [])
    meta = [f"{dicom(n)},{s},{st},CHEST,{view},48,64,{d},{t},CHEST,x,Erect"
            for n, s, st, view, d, t, _ in images]
    _write(cxr / "mimic-cxr-2.0.0-metadata.csv", META_HEADER, meta)
    _write(cxr / "mimic-cxr-2.0.0-chexpert.csv", CHEX_HEADER, CHEXPERT)
    for n, s, st, _view, _d, _t, value in CXR_IMAGES:
        write_jpeg(image_path(cxr, s, st, n), value)
    if v31:
        _write_odd_images(cxr)
    return mimic, cxr
