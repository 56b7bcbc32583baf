# dlrun - `make help` lists the targets. Everything runs inside .venv, created on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, pinned, in the build this machine needs, so nothing later pulls
# the newest torch with gigabytes of CUDA wheels (scripts/install_torch.py). TORCH_VARIANT:
# auto (the CPU build unless nvidia-smi is found), cpu, cuda (PyPI's default build), or a
# folder of PyTorch's wheel index (cu126, cu130, rocm6.4, ...); TORCH_INDEX: a mirror of it.
#   make install TORCH_VARIANT=cu126 TORCH="torch==2.5.1"
TORCH ?= torch==2.13.0
TORCH_VARIANT ?= auto
TORCH_INDEX ?= https://download.pytorch.org/whl
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Optional extras installed with the dev tools, e.g. make install EXTRAS=tracking (MLflow)
EXTRAS ?=
comma := ,

# The fast suite runs in parallel (pytest-xdist), one worker per core; tests use their own
# tmp dirs and cwd, so any split is safe. make test PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= auto

.PHONY: FORCE help install run test test-distributed test-browser test-services test-all lint \
  format bench bench-startup bench-data bench-serve transfer bagging sweep lessons smoke \
  mutation clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python scripts/install_torch.py --variant "$(TORCH_VARIANT)" --pin "$(TORCH)" \
	  --index "$(TORCH_INDEX)"
	$(BIN)/python -m pip install -q -e ".[dev$(if $(EXTRAS),$(comma)$(EXTRAS))]" "$(TORCH)"
	touch $(STAMP)

# A build, pin or extra named on the command line is installed even into a .venv set up.
ifneq ($(filter command line,$(origin TORCH_VARIANT) $(origin TORCH) $(origin EXTRAS)),)
$(STAMP): FORCE
endif

install: $(STAMP) ## Create .venv with dlrun and its dev tools; TORCH_VARIANT=auto|cpu|cuda|cu126, EXTRAS=tracking

run: $(STAMP) ## Train and evaluate the default experiment (LeNet-5 on digits)
	$(BIN)/dlrun $(ARGS)

test: $(STAMP) ## Run the fast test suite (no slow, gpu, distributed, browser or services tests)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) \
	  -m "not slow and not gpu and not distributed and not browser and not services" $(PYTEST_ARGS)

test-distributed: $(STAMP) ## Run the multi-process (torch.distributed) tests that aren't slow
	$(BIN)/python -m pytest -q -m "distributed and not slow and not gpu" $(PYTEST_ARGS)

# The extras a target needs are installed on first use (again when pyproject.toml changes);
# Debian packages (Chromium, PostgreSQL) when missing, as root or through password-less sudo,
# else the target stops with one line. Every test these targets select must run: a skip
# fails (tests/require_all.py), so CI can't go green having tested nothing.
$(VENV)/.browser: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[browser]" "$(TORCH)"
	touch $@

$(VENV)/.services: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[tracking,wandb,postgres]" "$(TORCH)"
	touch $@

test-browser: $(VENV)/.browser ## Open report.html/leaderboard.html in headless Chromium (installs it)
	@bash scripts/apt_install.sh chromedriver chromium chromium-driver
	$(BIN)/python -m pytest -q -p tests.require_all -m "browser and not slow" $(PYTEST_ARGS)

test-services: $(VENV)/.services ## MLflow server, W&B offline, PostgreSQL-shared Optuna (installs them)
	@bash scripts/apt_install.sh pg_ctl postgresql
	$(BIN)/python -m pytest -q -p tests.require_all -m "services and not slow" $(PYTEST_ARGS)

test-all: $(STAMP) ## Run every test (GPU tests skip without CUDA)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP) ## Check style with ruff
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

bench: $(STAMP) ## Trainer vs a hand-written loop, then whole-process start-up vs a Lightning peer
	$(BIN)/python scripts/bench_overhead.py $(ARGS)
	$(MAKE) --no-print-directory bench-startup

bench-startup: $(VENV)/.bench ## Wall time of --help, a one-batch run, the default run vs Lightning
	$(BIN)/python scripts/bench_startup.py $(STARTUP_ARGS)

$(VENV)/.bench: $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[bench]" "$(TORCH)"
	touch $@

bench-data: $(STAMP) ## Image-folder input pipeline at 1k/10k/100k images: first batch, images/s, cache, memory
	$(BIN)/python scripts/bench_data.py $(ARGS)

bench-serve: $(STAMP) ## Load-test dlrun-serve on 127.0.0.1 against the model in-process
	$(BIN)/python scripts/bench_serve.py $(ARGS)

transfer: $(STAMP) ## Transfer learning (digits 0-4 -> 5-9, few labels) vs scratch over seeds
	$(BIN)/python scripts/transfer.py $(ARGS)

bagging: $(STAMP) ## Bagging (10 MLPs on bootstrap resamples) vs one MLP over seeds
	$(BIN)/python scripts/bagging.py $(ARGS)

sweep: $(STAMP) ## A small sweep on digits (lr x batch size) that ends with a leaderboard
	$(BIN)/dlrun -m model=lenet data=digits optimizer.lr=0.01,0.003,0.001 \
	  trainer.batch_size=32,128 trainer.epochs=5 $(ARGS)

lessons: $(STAMP) ## The notes' lessons as small sweeps, each claim judged: outputs/lessons/report.md
	$(BIN)/python scripts/lessons.py $(ARGS)

smoke: $(STAMP) ## Every experiment in configs/experiment/ for one batch (what CI runs)
	@set -e; for e in configs/experiment/*.yaml; do \
	  name=$$(basename $$e .yaml); echo "== experiment=$$name"; \
	  $(BIN)/dlrun experiment=$$name trainer.epochs=1 trainer.limit_batches=1 \
	    trainer.progress=none paths.outputs=outputs/smoke > /dev/null; \
	done; echo "smoke: every experiment ran"

mutation: $(STAMP) ## Mutation testing of the core (slow, not in CI); MODULE=checkpoint for one
	test -x $(BIN)/mutmut || $(BIN)/python -m pip install -q -e ".[mutation]" "$(TORCH)"
	$(BIN)/python scripts/mutation.py $(MODULE)

clean: ## Remove caches and build files (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info .mutation mutants
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
