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
	@echo "demo: eval commands run with 200 bootstrap replicates and 2 removal draws to stay quick (defaults: 1000 and 5)"
	$(BIN)/mmfair --workspace $(WORKSPACE) eval-missing --rate 0.2 --rate 0.5 --rate 1.0 --bootstrap 200 --draws 2
	$(BIN)/mmfair --workspace $(WORKSPACE) eval-fair --bootstrap 200
	$(BIN)/mmfair --workspace $(WORKSPACE) report --format markdown --out $(WORKSPACE)/reports/report.md
	$(BIN)/mmfair --workspace $(WORKSPACE) report --format terminal
	$(BIN)/mmfair --workspace $(WORKSPACE) report --format html --out $(WORKSPACE)/reports/report.html
	@echo "Open the report: $(abspath $(WORKSPACE))/reports/report.html"

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

# A real one-node Slurm from Debian's packages (scripts/slurm_local.sh installs slurm-wlm + munge with apt-get
# when missing, so it needs root): submits a tiny study, cancels one array task, resubmits, checks the results
# are complete and unique. Skips with the reason where the packages cannot be installed.
.PHONY: test-slurm
test-slurm: venv
	$(BIN)/python -m pytest -q -s -m slow tests/core/study/test_study_slurm.py

# `mmfair study` on the demo workspace (run `make demo` first): the demo preset, two processes.
.PHONY: study-demo
study-demo: venv
	$(BIN)/mmfair --workspace $(WORKSPACE) study run --preset demo --jobs 2
	$(BIN)/mmfair --workspace $(WORKSPACE) study status --preset demo

# The carebench grid without tuning, embeddings mode, on a scaled synthetic workspace: sequential vs --jobs 2.
.PHONY: bench-study-grid
bench-study-grid: venv
	$(BIN)/python bench/study_grid.py

# Mutation testing (mutmut, installed on first use) of the evaluation core — metrics, patient bootstrap,
# missingness scenarios, thresholds — and the fold assignment of data/cohort.py; configuration and the tests
# it runs in pyproject.toml [tool.mutmut]. Works in ./mutants/; `make mutate` ends with the survivors.
MUTANTS ?= mmfair.core.evaluation.metrics* mmfair.core.evaluation.bootstrap* mmfair.core.evaluation.scenarios* \
           mmfair.core.evaluation.thresholds* mmfair.core.data.cohort.x_assign_folds*
.PHONY: mutate
mutate: venv
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/pip install --quiet "mutmut>=3.8"
	$(BIN)/mutmut run $(foreach m,$(MUTANTS),"$(m)")
	$(BIN)/mutmut results
