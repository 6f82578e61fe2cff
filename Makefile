# Two commands do all set-up: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKSPACE ?= mmfair-workspace
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-all check-planted venv clean-workspace

# torch + torchvision are pinned as a pair: it is the pair that installs from the local wheel cache here,
# and timm's torchvision import breaks with a mismatched pair (see docs/install.md).
$(BIN)/mmfair: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/mmfair

venv: $(BIN)/mmfair

demo: venv
	$(BIN)/mmfair --workspace $(WORKSPACE) prep
	$(BIN)/mmfair --workspace $(WORKSPACE) train --fusion ehr --fusion cxr --fusion late --fusion early --task mortality --fold 0
	$(BIN)/mmfair --workspace $(WORKSPACE) eval-missing --rate 0.2 --rate 0.5 --rate 1.0
	$(BIN)/mmfair --workspace $(WORKSPACE) eval-fair
	$(BIN)/mmfair --workspace $(WORKSPACE) report --format markdown --out $(WORKSPACE)/reports/report.md
	$(BIN)/mmfair --workspace $(WORKSPACE) report --format terminal

test: venv
	$(BIN)/python -m pytest -q

test-all: venv
	$(BIN)/python -m pytest -q -m "slow or not slow"

# Its own larger synthetic workspace (see tests/test_planted.py for why); reused when run again.
check-planted: venv
	MMFAIR_PLANTED_WORKSPACE=$(WORKSPACE)-planted $(BIN)/python -m pytest -q -s -m slow tests/test_planted.py

clean-workspace:
	rm -rf $(WORKSPACE)

# Time and peak memory of prep on a synthetic tree with MIMIC's rows per stay (generated once under
# bench/out/prep-scale, then reused): the EHR part under two DuckDB limits, images/s and the CXR encoder
# stage. 75,000 stays (~560 M event rows, above v2.2's) take ~30 min to generate (14 GB) plus ~21 min on 2
# cores; BENCH_PREP_STAYS=12000 is a shorter variant that extrapolates to v2.2's row counts.
BENCH_PREP_STAYS ?= 75000
.PHONY: bench-prep
bench-prep: venv
	$(BIN)/python bench/prep_scale.py --n-stays $(BENCH_PREP_STAYS) --chart-volume mimic
