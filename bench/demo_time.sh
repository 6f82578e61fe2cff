#!/usr/bin/env bash
# Wall time of `make demo` on an empty workspace (cold) and again on the finished one (warm: every stage
# reuses its outputs). Needs .venv (run `make venv` first: its time is reported separately by `make`).
set -euo pipefail
cd "$(dirname "$0")/.."
ws=${1:-bench/out/demo-workspace}
rm -rf "$ws"
mkdir -p bench/out
start=$(date +%s.%N); make demo WORKSPACE="$ws" > bench/out/demo_cold.log 2>&1; cold=$(echo "$(date +%s.%N) - $start" | bc)
start=$(date +%s.%N); make demo WORKSPACE="$ws" > bench/out/demo_warm.log 2>&1; warm=$(echo "$(date +%s.%N) - $start" | bc)
printf '| run | wall seconds |\n|---|---|\n| make demo, empty workspace (cold) | %.0f |\n| make demo, finished workspace (warm) | %.0f |\n' "$cold" "$warm"
printf 'machine: %s cores, %s\n' "$(nproc)" "$(python3 -c 'import platform; print(platform.processor() or platform.machine())')"
