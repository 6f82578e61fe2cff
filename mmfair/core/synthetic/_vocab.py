"""Vocabularies, itemids and dictionary rows copied in shape from MIMIC-IV / MIMIC-CXR-JPG.

Only facts about the public file formats live here (column orders, value strings, itemids, marginal
shares from ``reference/mimic_schema.md``); nothing here is planted structure.
"""

from __future__ import annotations

# ---- column orders (mimic_schema §1.3, §2.2–2.4); DuckDB COPY relies on them --------------------
PATIENTS_COLUMNS = ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
ADMISSIONS_COLUMNS = [
    "subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type", "admit_provider_id",
    "admission_location", "discharge_location", "insurance", "language", "marital_status", "race",
    "edregtime", "edouttime", "hospital_expire_flag",
]
ICUSTAYS_COLUMNS = ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"]
CHARTEVENTS_COLUMNS = [
    "subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid", "value", "valuenum",
    "valueuom", "warning",
]
LABEVENTS_COLUMNS = [
    "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id", "charttime", "storetime",
    "value", "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag", "priority", "comments",
]
OUTPUTEVENTS_COLUMNS = [
    "subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid", "value", "valueuom",
]
DIAGNOSES_COLUMNS = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
D_ITEMS_COLUMNS = [
    "itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type", "lownormalvalue",
    "highnormalvalue",
]
D_LABITEMS_COLUMNS = ["itemid", "label", "fluid", "category"]
TRANSFERS_COLUMNS = ["subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime", "outtime"]

CXR_METADATA_COLUMNS = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
CHEXPERT_LABELS = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]
CXR_SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]

# Tables of the real download that mmfair never reads: written header-only so file-set checks pass.
EMPTY_HOSP_TABLES = [
    "d_hcpcs", "d_icd_procedures", "drgcodes", "emar", "emar_detail", "hcpcsevents", "microbiologyevents", "omr",
    "pharmacy", "poe", "poe_detail", "prescriptions", "procedures_icd", "provider", "services",
]
EMPTY_ICU_TABLES = ["caregiver", "datetimeevents", "ingredientevents", "inputevents", "procedureevents"]

# ---- demographics (mimic_schema §1.4, §6.1) -----------------------------------------------------
RACE_SHARES: dict[str, float] = {
    "WHITE": 0.58, "WHITE - OTHER EUROPEAN": 0.03, "WHITE - RUSSIAN": 0.02, "WHITE - EASTERN EUROPEAN": 0.015,
    "WHITE - BRAZILIAN": 0.005,
    "BLACK/AFRICAN AMERICAN": 0.08, "BLACK/CAPE VERDEAN": 0.01, "BLACK/CARIBBEAN ISLAND": 0.006,
    "BLACK/AFRICAN": 0.004,
    "HISPANIC OR LATINO": 0.012, "HISPANIC/LATINO - PUERTO RICAN": 0.012, "HISPANIC/LATINO - DOMINICAN": 0.007,
    "HISPANIC/LATINO - GUATEMALAN": 0.002, "HISPANIC/LATINO - SALVADORAN": 0.002,
    "HISPANIC/LATINO - MEXICAN": 0.001, "HISPANIC/LATINO - CUBAN": 0.001, "HISPANIC/LATINO - COLUMBIAN": 0.001,
    "HISPANIC/LATINO - HONDURAN": 0.001, "HISPANIC/LATINO - CENTRAL AMERICAN": 0.001,
    "ASIAN": 0.012, "ASIAN - CHINESE": 0.01, "ASIAN - SOUTH EAST ASIAN": 0.003, "ASIAN - ASIAN INDIAN": 0.003,
    "ASIAN - KOREAN": 0.002,
    "AMERICAN INDIAN/ALASKA NATIVE": 0.003, "NATIVE HAWAIIAN OR OTHER PACIFIC ISLANDER": 0.001,
    "MULTIPLE RACE/ETHNICITY": 0.002, "PORTUGUESE": 0.004, "SOUTH AMERICAN": 0.002, "OTHER": 0.035,
    "UNKNOWN": 0.08, "UNABLE TO OBTAIN": 0.015, "PATIENT DECLINED TO ANSWER": 0.01,
}


def race_group(race: str) -> str:
    """The DESIGN §3.1 grouping (the generator needs it to plant group effects)."""
    if race.startswith("WHITE") or race == "PORTUGUESE":
        return "WHITE"
    if race.startswith("BLACK"):
        return "BLACK"
    if race.startswith("HISPANIC") or race == "SOUTH AMERICAN":
        return "HISPANIC"
    if race.startswith("ASIAN"):
        return "ASIAN"
    if race in ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER"):
        return "UNKNOWN"
    return "OTHER"


INSURANCE_SHARES = {
    "2.2": {"Medicare": 0.452, "Other": 0.473, "Medicaid": 0.075},
    "3.1": {"Medicare": 0.48, "Private": 0.30, "Medicaid": 0.12, "Other": 0.09, "No charge": 0.01},
}
LANGUAGE_SHARES = {
    "2.2": {"ENGLISH": 0.89, "?": 0.11},
    "3.1": {
        "English": 0.89, "Spanish": 0.035, "Chinese": 0.015, "Russian": 0.012, "Portuguese": 0.01, "Haitian": 0.008,
        "Vietnamese": 0.006, "Cape Verdean": 0.005, "Italian": 0.004, "Arabic": 0.003, "Other": 0.012,
    },
}
MARITAL_SHARES = {"MARRIED": 0.45, "SINGLE": 0.28, "WIDOWED": 0.14, "DIVORCED": 0.07, "": 0.06}
ADMISSION_TYPE_SHARES = {
    "EW EMER.": 0.45, "URGENT": 0.2, "SURGICAL SAME DAY ADMISSION": 0.12, "DIRECT EMER.": 0.08, "ELECTIVE": 0.06,
    "OBSERVATION ADMIT": 0.05, "EU OBSERVATION": 0.02, "DIRECT OBSERVATION": 0.015, "AMBULATORY OBSERVATION": 0.005,
}
ADMISSION_LOCATIONS = [
    "EMERGENCY ROOM", "PHYSICIAN REFERRAL", "TRANSFER FROM HOSPITAL", "WALK-IN/SELF REFERRAL", "CLINIC REFERRAL",
    "PROCEDURE SITE", "PACU", "TRANSFER FROM SKILLED NURSING FACILITY", "AMBULATORY SURGERY TRANSFER",
    "INFORMATION NOT AVAILABLE", "INTERNAL TRANSFER TO OR FROM PSYCH",
]
ADMISSION_LOCATION_SHARES = [0.5, 0.12, 0.15, 0.03, 0.02, 0.06, 0.06, 0.02, 0.02, 0.015, 0.005]
DISCHARGE_LOCATIONS_ALIVE = {
    "HOME": 0.22, "HOME HEALTH CARE": 0.25, "SKILLED NURSING FACILITY": 0.2, "REHAB": 0.1, "HOSPICE": 0.02,
    "ACUTE HOSPITAL": 0.03, "CHRONIC/LONG TERM ACUTE CARE": 0.06, "OTHER FACILITY": 0.02, "AGAINST ADVICE": 0.01,
    "ASSISTED LIVING": 0.01, "PSYCH FACILITY": 0.01, "HEALTHCARE FACILITY": 0.005, "": 0.055,
}
CAREUNITS = {
    "Medical Intensive Care Unit (MICU)": 0.21,
    "Medical/Surgical Intensive Care Unit (MICU/SICU)": 0.17,
    "Cardiac Vascular Intensive Care Unit (CVICU)": 0.16,
    "Surgical Intensive Care Unit (SICU)": 0.15,
    "Trauma SICU (TSICU)": 0.12,
    "Coronary Care Unit (CCU)": 0.11,
    "Neuro Intermediate": 0.04,
    "Neuro Surgical Intensive Care Unit (Neuro SICU)": 0.03,
    "Neuro Stepdown": 0.01,
}
ANCHOR_YEAR_GROUPS = {
    # Weighted towards MIMIC-CXR's real years (2011–2016) so that a paired cohort is not tiny.
    "2.2": {"2008 - 2010": 0.12, "2011 - 2013": 0.38, "2014 - 2016": 0.38, "2017 - 2019": 0.12},
    "3.1": {"2008 - 2010": 0.10, "2011 - 2013": 0.34, "2014 - 2016": 0.34, "2017 - 2019": 0.12, "2020 - 2022": 0.10},
}
CXR_YEAR_GROUPS = ("2011 - 2013", "2014 - 2016")

# ---- itemids (mimic_schema §3.1) ----------------------------------------------------------------
HR, SBP_NI, SBP_ART, DBP_NI, DBP_ART, MBP_NI, MBP_ART = 220045, 220179, 220050, 220180, 220051, 220181, 220052
RESP, SPO2, SAO2_CHART = 220210, 220277, 220227
TEMP_C, TEMP_F = 223762, 223761
GCS_EYE, GCS_VERBAL, GCS_MOTOR = 220739, 223900, 223901
CAP_REFILL_R, CAP_REFILL_L = 223951, 224308
GLUCOSE_SERUM, GLUCOSE_FINGER, GLUCOSE_WHOLE = 220621, 225664, 226537
PH_ART_CHART, FIO2 = 223830, 223835
WEIGHT_KG, WEIGHT_LBS, HEIGHT_CM, HEIGHT_IN = 226512, 226531, 226730, 226707
URINE_FOLEY, URINE_VOID = 226559, 226560

LAB_SO2, LAB_PH, LAB_GLUCOSE_BG, LAB_GLUCOSE_CHEM, LAB_LACTATE = 50817, 50820, 50809, 50931, 50813
LAB_CREATININE, LAB_WBC, LAB_URINE_GLUCOSE, LAB_URINE_PH = 50912, 51301, 51478, 51491

GCS_EYE_TEXT = {4: "Spontaneously", 3: "To Speech", 2: "To Pain", 1: "None"}
GCS_VERBAL_TEXT = {5: "Oriented", 4: "Confused", 3: "Inappropriate Words", 2: "Incomprehensible sounds", 1: "No Response"}
GCS_VERBAL_ETT = "No Response-ETT"
GCS_MOTOR_TEXT = {
    6: "Obeys Commands", 5: "Localizes Pain", 4: "Flex-withdraws", 3: "Abnormal Flexion", 2: "Abnormal extension",
    1: "No response",
}
CAP_REFILL_TEXT = {0: "Normal <3 secs", 1: "Abnormal >3 secs"}

# itemid, label, abbreviation, linksto, category, unitname, param_type, lownormal, highnormal
D_ITEMS_ROWS = [
    (HR, "Heart Rate", "HR", "chartevents", "Routine Vital Signs", "bpm", "Numeric", None, None),
    (SBP_ART, "Arterial Blood Pressure systolic", "ABPs", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", 90, 140),
    (DBP_ART, "Arterial Blood Pressure diastolic", "ABPd", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", 60, 90),
    (MBP_ART, "Arterial Blood Pressure mean", "ABPm", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", None, None),
    (SBP_NI, "Non Invasive Blood Pressure systolic", "NBPs", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", 90, 140),
    (DBP_NI, "Non Invasive Blood Pressure diastolic", "NBPd", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", 60, 90),
    (MBP_NI, "Non Invasive Blood Pressure mean", "NBPm", "chartevents", "Routine Vital Signs", "mmHg", "Numeric", None, None),
    (RESP, "Respiratory Rate", "RR", "chartevents", "Respiratory", "insp/min", "Numeric", None, None),
    (SAO2_CHART, "Arterial O2 Saturation", "Arterial O2 Saturation", "chartevents", "Labs", "%", "Numeric", None, None),
    (SPO2, "O2 saturation pulseoxymetry", "SpO2", "chartevents", "Respiratory", "%", "Numeric", None, None),
    (GCS_EYE, "GCS - Eye Opening", "GCS - Eye Opening", "chartevents", "Neurological", None, "Text", None, None),
    (TEMP_F, "Temperature Fahrenheit", "Temperature F", "chartevents", "Routine Vital Signs", "°F", "Numeric", None, None),
    (TEMP_C, "Temperature Celsius", "Temperature C", "chartevents", "Routine Vital Signs", "°C", "Numeric", None, None),
    (PH_ART_CHART, "PH (Arterial)", "PH (Arterial)", "chartevents", "Labs", "units", "Numeric", None, None),
    (FIO2, "Inspired O2 Fraction", "FiO2", "chartevents", "Respiratory", None, "Numeric", None, None),
    (GCS_VERBAL, "GCS - Verbal Response", "GCS - Verbal Response", "chartevents", "Neurological", None, "Text", None, None),
    (GCS_MOTOR, "GCS - Motor Response", "GCS - Motor Response", "chartevents", "Neurological", None, "Text", None, None),
    (CAP_REFILL_R, "Capillary Refill R", "Capillary Refill R", "chartevents", "Skin - Assessment", None, "Text", None, None),
    (CAP_REFILL_L, "Capillary Refill L", "Capillary Refill L", "chartevents", "Skin - Assessment", None, "Text", None, None),
    (GLUCOSE_SERUM, "Glucose (serum)", "Glucose (serum)", "chartevents", "Labs", "mg/dL", "Numeric", None, None),
    (GLUCOSE_FINGER, "Glucose finger stick (range 70-100)", "Glucose FS (range 70 -100)", "chartevents", "Routine Vital Signs", "mg/dL", "Numeric", None, None),
    (GLUCOSE_WHOLE, "Glucose (whole blood)", "Glucose (whole blood)", "chartevents", "Labs", "mg/dL", "Numeric", None, None),
    (WEIGHT_KG, "Admission Weight (Kg)", "Admission Weight (Kg)", "chartevents", "General", "kg", "Numeric", None, None),
    (WEIGHT_LBS, "Admission Weight (lbs.)", "Admission Weight (lbs.)", "chartevents", "General", None, "Numeric", None, None),
    (HEIGHT_IN, "Height", "Height", "chartevents", "General", "Inch", "Numeric", None, None),
    (HEIGHT_CM, "Height (cm)", "Height (cm)", "chartevents", "General", "cm", "Numeric", None, None),
    (URINE_FOLEY, "Foley", "Foley", "outputevents", "Output", "mL", "Numeric", None, None),
    (URINE_VOID, "Void", "Void", "outputevents", "Output", "mL", "Numeric", None, None),
]
D_LABITEMS_ROWS = [
    (LAB_GLUCOSE_BG, "Glucose", "Blood", "Blood Gas"),
    (LAB_LACTATE, "Lactate", "Blood", "Blood Gas"),
    (LAB_SO2, "Oxygen Saturation", "Blood", "Blood Gas"),
    (LAB_PH, "pH", "Blood", "Blood Gas"),
    (LAB_CREATININE, "Creatinine", "Blood", "Chemistry"),
    (LAB_GLUCOSE_CHEM, "Glucose", "Blood", "Chemistry"),
    (LAB_WBC, "White Blood Cells", "Blood", "Hematology"),
    (LAB_URINE_GLUCOSE, "Glucose", "Urine", "Chemistry"),
    (LAB_URINE_PH, "pH", "Urine", "Hematology"),
]
LAB_UNITS = {
    LAB_GLUCOSE_BG: "mg/dL", LAB_LACTATE: "mmol/L", LAB_SO2: "%", LAB_PH: "units", LAB_CREATININE: "mg/dL",
    LAB_GLUCOSE_CHEM: "mg/dL", LAB_WBC: "K/uL", LAB_URINE_GLUCOSE: "mg/dL", LAB_URINE_PH: "units",
}
LAB_REFERENCE = {
    LAB_GLUCOSE_BG: (70, 105), LAB_LACTATE: (0.5, 2.0), LAB_SO2: (None, None), LAB_PH: (7.35, 7.45),
    LAB_CREATININE: (0.5, 1.2), LAB_GLUCOSE_CHEM: (70, 100), LAB_WBC: (4.0, 11.0), LAB_URINE_GLUCOSE: (None, None),
    LAB_URINE_PH: (5, 8),
}

# ---- ICD filler codes that belong to none of the 25 phenotype groups (checked at runtime) --------
FILLER_ICD9 = [
    "V5861", "V4986", "E8788", "2859", "3051", "V1582", "53081", "311", "3004", "V5867", "27800", "V1254", "0414",
    "0088", "07054", "V4581", "2875", "78791", "71590", "E8497", "V1046", "2809", "60000", "73300",
]
FILLER_ICD10 = [
    "Z7901", "Z87891", "D649", "F329", "F419", "K219", "E669", "Z794", "G4733", "B962", "Z66", "Z515", "M109",
    "E039", "D62", "Z950", "R197", "K5900", "N400", "M810", "Z8546", "F17210", "G8929", "Y929",
]
