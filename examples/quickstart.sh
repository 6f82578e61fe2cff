#!/usr/bin/env bash
# The demo, step by step (what `make demo` runs): a synthetic MIMIC-shaped source with planted effects,
# four methods, the two evaluations and the report. About 3-4 minutes on 2 CPU cores; nothing is downloaded.
# Usage: bash examples/quickstart.sh [WORKSPACE]   (default: mmfair-workspace; reruns reuse finished stages)
set -euo pipefail
WS="${1:-mmfair-workspace}"
MMFAIR="${MMFAIR:-mmfair}"           # e.g. MMFAIR=.venv/bin/mmfair
export HF_HUB_OFFLINE=1              # mmfair never needs the network at run time

# 1. No --mimic-root: generate the synthetic source into $WS/source/ and prep it like real MIMIC
#    (cohort, hourly EHR series, image store, CXR encoder and embeddings) into $WS/data/.
"$MMFAIR" --workspace "$WS" prep

# 2. Train the two single-modality models and two fusion methods on in-hospital mortality, test fold 0
#    (validation is fold 1; early stopping and thresholds are chosen there, never on test).
"$MMFAIR" --workspace "$WS" train --fusion ehr --fusion cxr --fusion late --fusion early --task mortality --fold 0

# 3. Remove the CXR from 20 %, 50 % and 100 % of the test stays that have one and re-score every run
#    (2 random draws per rate and 200 bootstrap replicates keep the demo quick; defaults: 5 and 1000).
"$MMFAIR" --workspace "$WS" eval-missing --rate 0.2 --rate 0.5 --rate 1.0 --bootstrap 200 --draws 2

# 4. Per-group metrics and fairness gaps, and paired comparisons with late fusion on the same stays.
"$MMFAIR" --workspace "$WS" eval-fair --bootstrap 200

# 5. The report: a compact terminal summary, then one self-contained HTML page with figures
#    (figures also as PNG/PDF in $WS/reports/figures/).
"$MMFAIR" --workspace "$WS" report
"$MMFAIR" --workspace "$WS" report --format html
echo "Open the report: $WS/reports/report.html"
