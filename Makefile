# Two commands do all set-up on a fresh machine: `make reproduce` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
DATA ?= data
PRESET ?= default
SEED ?= 0
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
export PYTHONHASHSEED := 0
# OpenMP idle threads. Where several torch processes share the 2 cores (the DDP tests,
# bench_ddp_equivalence) spinning makes torch 2-10x slower, so `make test` (tests/conftest.py
# too) and `make bench` let idle threads sleep (PASSIVE). `make reproduce` runs one process at
# a time and keeps the OpenMP default (spin briefly, then sleep): stage 1 81 s instead of
# 110 s, stage 2 44 s instead of 60 s, bit-identical metrics (measured on this machine).
test test-browser bench: export OMP_WAIT_POLICY ?= PASSIVE
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: env lock lint format tensorboard gpu-check reproduce reproduce-full reproduce-long test test-browser data notebooks bench lab clean-env

env: $(STAMP)

# Create .venv when missing (or update it when the lock changed), with the exact versions
# of requirements.lock; torch==2.13.0 first so no CUDA build is pulled.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c $(LOCK) --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) torch==2.13.0
	$(BIN)/pip install -q -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

# Refresh requirements.lock: resolve pyproject.toml's ranges afresh in a throw-away venv and
# write every installed version. Then `make clean-env test` checks the suite with it, and a
# `make reproduce` shows whether any figure moved; commit the lock only when both pass.
lock:
	rm -rf .venv-lock
	$(PY) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q torch==2.13.0
	.venv-lock/bin/pip install -q -e ".[dev]"
	{ echo "# Exact versions of every package \`make\` installs (pip constraints: pip install -c $(LOCK))."; \
	  echo "# Written by \`make lock\` on $$(date -u +%Y-%m-%d) with $$(.venv-lock/bin/python --version); do not edit by hand."; \
	  echo "# torch is pinned without its local tag (+cpu), so a CUDA build of the same release also satisfies it."; \
	  .venv-lock/bin/pip freeze --all --exclude-editable | sed -E 's/^torch==([0-9.]+)\+[a-z0-9]+$$/torch==\1/'; } > $(LOCK)
	rm -rf .venv-lock
	@echo "wrote $(LOCK): now run make clean-env test"

data: $(STAMP)
	$(PYTHON) -m cmamlib.data.synth --out $(DATA) --preset $(PRESET) --seed $(SEED)

# Generate the synthetic benchmark, run every notebook through papermill, write reports/.
# Notebooks 02 and 03 leave out their investigation rows (INVESTIGATIONS=False), which
# `make reproduce-full` adds; WORKERS: training processes per notebook (cmamlib.parallel).
WORKERS ?= 2
reproduce: data
	@mkdir -p reports
	@start=$$(date +%s); \
	for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); \
	  case $$name in 02_*|03_*) extra="-p INVESTIGATIONS False";; *) extra="";; esac; \
	  echo "== $$nb"; t0=$$(date +%s); \
	  mkdir -p reports/$$name; \
	  $(BIN)/papermill --cwd notebooks $$nb reports/$$name/executed.ipynb -p DATA_ROOT ../$(DATA) \
	    -p WORKERS $(WORKERS) $$extra || exit 1; \
	  echo "   $$name: $$(( $$(date +%s) - t0 )) s" | tee -a reports/timings.txt; \
	done; \
	echo "reproduce total: $$(( $$(date +%s) - start )) s" | tee -a reports/timings.txt
	$(PYTHON) -m cmamlib.reports readme-table --block main

# `make reproduce`, then notebooks 02 and 03 again with their investigation rows (stage 1
# with SIM weight 0.05 / F_g drawn independently, and stage 2 from them); the other runs
# are loaded from runs/. Timings in reports/timings-full.txt.
reproduce-full: reproduce
	@start=$$(date +%s); \
	for name in 02_cmam_pretraining 03_self_training; do \
	  echo "== notebooks/$$name.ipynb (INVESTIGATIONS=True)"; t0=$$(date +%s); \
	  $(BIN)/papermill --cwd notebooks notebooks/$$name.ipynb reports/$$name/executed.ipynb -p DATA_ROOT ../$(DATA) \
	    -p WORKERS $(WORKERS) -p INVESTIGATIONS True || exit 1; \
	  echo "   $$name (investigations): $$(( $$(date +%s) - t0 )) s" | tee -a reports/timings-full.txt; \
	done; \
	echo "reproduce-full extra: $$(( $$(date +%s) - start )) s" | tee -a reports/timings-full.txt
	$(PYTHON) -m cmamlib.reports readme-table --block main

# Notebook 03 with the cpu-long preset (the best measured CPU setting: 4x the stage-2 steps,
# identity-scale clustering; cmamlib/presets.py), SYSU-MM01-synth only, into
# reports/03_self_training_cpu-long/ and runs/cpu-long/; 2,019 s on 2 cores (2026-11-29).
reproduce-long: data
	@mkdir -p reports/03_self_training_cpu-long
	@t0=$$(date +%s); \
	$(BIN)/papermill --cwd notebooks notebooks/03_self_training.ipynb reports/03_self_training_cpu-long/executed.ipynb \
	  -p DATA_ROOT ../$(DATA) -p PRESET cpu-long -y "REGDB_SPLITS: []" || exit 1; \
	dt=$$(( $$(date +%s) - t0 )); \
	echo "03_self_training_cpu-long: $$dt s" | tee -a reports/timings-long.txt; \
	echo "reproduce total: $$dt s" >> reports/timings-long.txt
	$(PYTHON) -m cmamlib.reports readme-table --block long

# The linter and the formatter's check first (seconds), then the suite.
# Two pytest workers (pytest-xdist): the slow tests are mostly subprocess start-up and
# notebook kernels, so on this 2-core machine the suite takes 6.2 min instead of 10.7.
TEST_WORKERS ?= 2
test: lint
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rewrite the code in the project's format (ruff; settings in pyproject.toml) and apply the
# linter's safe fixes.
format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Real-browser check of notebook 05 (kept out of `make test`): installs Debian's chromium and
# chromium-driver (apt) and selenium (the `browser` extra) when missing, then runs
# tests/browser/check_inspector.py: a SMOKE copy of the notebook in JupyterLab (127.0.0.1,
# free port, token) opened in headless Chromium, run, inspector checked and clicked;
# screenshots and result.json in reports/browser/.
test-browser: $(STAMP)
	@start=$$(date +%s); \
	if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver || exit 1; \
	fi; \
	$(PYTHON) -c "import selenium" 2>/dev/null || $(BIN)/pip install -q -e ".[browser]" || exit 1; \
	$(PYTHON) tests/browser/check_inspector.py --out reports/browser; rc=$$?; \
	echo "test-browser: $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc

bench: $(STAMP)
	@fail=""; for b in $(sort $(wildcard benchmarks/bench_*.py)); do echo "== $$b"; $(PYTHON) $$b || fail="$$fail $$b"; done; \
	if [ -n "$$fail" ]; then echo "benchmarks below their targets:$$fail"; exit 1; fi

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

# One prepared check of the real-scale path on a CUDA machine (benchmarks/gpu_check.py):
# stages 1 and 2 of the paper preset with float16 / bfloat16 AMP and channels_last, their
# ceiling, Jaccard + DBSCAN at SYSU-MM01 size, torchrun (nccl) through the CLI with a
# resume, evaluation; writes reports/bench/gpu_check.json and .txt. SMOKE=1: the same at
# toy scale on the CPU (under 2 minutes; the test suite runs it).
gpu-check: $(STAMP)
	SMOKE=$(SMOKE) $(PYTHON) benchmarks/gpu_check.py

# TensorBoard on every run folder under RUNS (each training run writes its event files
# beside its log.jsonl when the tensorboard package is installed, as in the locked env).
RUNS ?= runs
tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir $(RUNS) --host localhost --port $${PORT:-6006}

clean-env:
	rm -rf $(VENV)
