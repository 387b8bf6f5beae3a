# diffseg3d front door. Every target that needs the virtual environment creates it when missing,
# so `make test` (or `make ablations`) alone works on a fresh machine.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
# make ablations knobs: PROFILE=smoke|quick|paper, GRID=<grid yaml>, DATA=<prepared folder that
# replaces every data set of the grid; empty = the grid's own data roots>, OUT=<runs folder holding
# mlflow.db, artifacts and Tune results>, RAY_ADDRESS=<cluster>, MLFLOW_TRACKING_URI=<server>,
# SEEDS="0 1 2" (every trial once per seed, replacing the grid's seeds; empty = the grid's, one
# seed for paper.yaml; two or more give comparisons.csv its mixed-model column p_mixed).
PROFILE  ?= quick
SEEDS    ?=
SEEDS_FLAGS := $(if $(strip $(SEEDS)),--seeds $(SEEDS),)
GRID     ?= experiments/grids/paper.yaml
OUT      ?= runs
PHANTOM  ?= data/phantom
DATA     ?= $(PHANTOM)
RESULTS  ?= results
# The MLflow experiment `ablate` writes: the grid file's `name:` (its file name without one),
# unless EXPERIMENT is given; the tables go to $(RESULTS)/$(EXPERIMENT).
GRID_NAME = $(or $(shell sed -n 's/^name:[[:space:]]*//p' $(GRID) 2>/dev/null | head -n1 | tr -d "\"'"),$(basename $(notdir $(GRID))))
EXPERIMENT ?= $(GRID_NAME)
PHANTOM_CASES ?= 24
MAX_CONCURRENT ?= 2
# Retries of a lost or crashed trial from its last checkpoint within one run (ablate --max-failures).
MAX_FAILURES ?= 2
PYTEST_ARGS ?=
# Only the embedded phantom is generated on demand; a user's DATA folder must already be prepared.
DATA_PREREQ := $(if $(filter $(PHANTOM),$(DATA)),$(PHANTOM)/dataset.json,)
DATA_FLAGS  := $(if $(DATA),--data $(DATA),)

# The MLflow store of the main job (a `mlflow server` URL on a cluster). Passed to the commands that
# need it only: exporting it globally would redirect the tests' own temporary stores.
TRACKING_URI := $(or $(MLFLOW_TRACKING_URI),sqlite:///$(abspath $(OUT))/mlflow.db)

.PHONY: setup tex system-deps test-deps gpu-plan-deps gpu-plan test test-fast lint ablations tables \
	ui bench bench-quick bench-levers bench-gpu test-gpu data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# The test suite's Python packages: the `test` extra (torch 2.13.0's CPU build, MONAI,
# scikit-learn) and the `nnunet` one (nnU-Net v2, for the nnU-Net baseline's tests) on top of
# the `dev` one.
TEST_STAMP := $(VENV)/.installed-test
$(TEST_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e ".[dev,test,nnunet]"
	touch $(TEST_STAMP)

test-deps: $(TEST_STAMP)

# The CUDA PJRT plugin that compiles for a GPU on a machine without one (make gpu-plan, and the
# GPU-program tests of make test), at exactly the installed jaxlib's version, with no NVIDIA
# library (--no-deps), into its own folder: only processes given it on PYTHONPATH see it, so
# nothing else in the venv tries to start CUDA.
GPU_PLAN_SITE ?= $(abspath $(VENV))/gpu-plan-site
$(GPU_PLAN_SITE)/.installed: $(STAMP)
	v=$$($(BIN)/python -c "import jaxlib; print(jaxlib.__version__)") && \
	  $(BIN)/pip install -q --no-deps --upgrade --target $(GPU_PLAN_SITE) \
	    "jax-cuda12-plugin==$$v" "jax-cuda12-pjrt==$$v"
	touch $@

# libtpu, which compiles for a TPU topology on a machine without a TPU (the TPU rows of make
# gpu-plan, and their tests in make test): the version jax's own `tpu` extra pins (libtpu
# 0.0.42.* for jax 0.10.2), --no-deps, into its own folder as the CUDA plugin above.
TPU_PLAN_SITE ?= $(abspath $(VENV))/tpu-plan-site
$(TPU_PLAN_SITE)/.installed: $(STAMP)
	req=$$($(BIN)/python -c "import importlib.metadata as m; print(next(r.split(';')[0].replace(' ', '') for r in m.requires('jax') if r.startswith('libtpu')))") && \
	  $(BIN)/pip install -q --no-deps --upgrade --target $(TPU_PLAN_SITE) "$$req"
	touch $@

gpu-plan-deps: $(GPU_PLAN_SITE)/.installed $(TPU_PLAN_SITE)/.installed

# The paper grid's programs compiled for A100 80 GB, H100 and H200 without a GPU, and the
# paper_tpu profile's data-parallel programs for 4 chips of TPU v5e, v4 and v3 without a TPU:
# planned memory, conv verdict, FLOPs, roofline bound, compile time
# (benchmarks/results/gpu_plan.json, the tables docs/GPU.md shows). GPU_PLAN_ARGS: e.g.
# --cards h100_sxm --architectures imgx_v010; --cards v5e_2x2 --merge (the other rows kept).
GPU_PLAN_ARGS ?=
gpu-plan: gpu-plan-deps
	GPU_PLAN_SITE=$(GPU_PLAN_SITE) TPU_PLAN_SITE=$(TPU_PLAN_SITE) \
	  $(BIN)/python -m diffseg3d.experiments.gpu_plan.plan $(GPU_PLAN_ARGS)

# Debian packages some tests need: pdflatex (LaTeX tables), PostgreSQL (the cluster's tracking
# store), Chromium and ChromeDriver (the MLflow UI browser test). Installed as root with apt-get
# when missing; otherwise the command is printed and those tests skip (fail under CI=true).
SYSTEM_PACKAGES := texlive-latex-recommended postgresql chromium chromium-driver
system-deps:
	@missing=""; \
	command -v pdflatex >/dev/null 2>&1 || missing="$$missing texlive-latex-recommended"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (as root: apt-get install$$missing); the tests that need them skip"; fi; \
	fi

# pdflatex (with booktabs) for the LaTeX tables; installed from Debian's packages when absent.
tex:
	@command -v pdflatex >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends texlive-latex-recommended >/dev/null; \
	  else echo "pdflatex missing: install texlive-latex-recommended (LaTeX tests will fail)"; fi; }

setup: $(STAMP) tex

# The whole suite (what CI runs) and the edit-test loop: everything not marked slow (> ~20 s:
# model training, Ray clusters, servers, subprocess jobs). Both install what the suite needs
# first (test-deps, gpu-plan-deps, system-deps) and print the 25 slowest tests.
# Dozens of tests compile the same smoke networks in separate processes (ablate and train
# subprocesses, Ray workers): one JAX persistent compilation cache for the whole run lets each
# program compile once. It is emptied first, so every run starts from the same state and no
# program compiled by an older checkout is ever loaded.
TEST_JAX_CACHE := $(abspath $(VENV))/test-jax-cache
# TEST_WORKERS pytest processes (pytest-xdist) share the machine, each running whole test files
# (--dist loadfile: a module's fixtures, a trained model or a local Ray, are built once): much
# of the suite waits on subprocesses, servers and Ray's start-up, so two keep both cores busy.
# TEST_WORKERS=0 runs the suite in one process. Ray starts its workers at nice 15
# (RAY_worker_niceness), which starves a Ray trial of one test whenever the other process
# compiles: the tests run Ray's workers at the normal priority.
TEST_WORKERS ?= 2
TEST_ENV := env -u MLFLOW_TRACKING_URI -u RAY_ADDRESS GPU_PLAN_SITE=$(GPU_PLAN_SITE) \
	JAX_COMPILATION_CACHE_DIR=$(TEST_JAX_CACHE) RAY_worker_niceness=0
TEST_PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25
test: test-deps gpu-plan-deps system-deps
	rm -rf $(TEST_JAX_CACHE)
	$(TEST_ENV) $(TEST_PYTEST) $(PYTEST_ARGS)

test-fast: test-deps gpu-plan-deps system-deps
	rm -rf $(TEST_JAX_CACHE)
	$(TEST_ENV) $(TEST_PYTEST) -m "not slow" $(PYTEST_ARGS)

# ruff, then the import rules of pyproject.toml's [tool.importlinter] (layers, forbidden imports).
lint: $(TEST_STAMP)
	$(BIN)/ruff check core experiments predict analysis cli tests benchmarks
	$(BIN)/lint-imports

$(PHANTOM)/dataset.json: | $(STAMP)
	$(BIN)/diffseg3d data phantom --out $(PHANTOM) --cases $(PHANTOM_CASES)

data: $(PHANTOM)/dataset.json

ablations: $(STAMP) tex $(DATA_PREREQ)
	mkdir -p $(OUT)
	MLFLOW_TRACKING_URI=$(TRACKING_URI) $(BIN)/diffseg3d ablate $(GRID) --profile $(PROFILE) $(DATA_FLAGS) --out $(OUT) \
	  --max-concurrent $(MAX_CONCURRENT) --max-failures $(MAX_FAILURES) $(SEEDS_FLAGS)
	MLFLOW_TRACKING_URI=$(TRACKING_URI) $(BIN)/diffseg3d tables --experiment $(EXPERIMENT) --out $(RESULTS)/$(EXPERIMENT) \
	  --grid $(GRID) $(DATA_FLAGS) $(SEEDS_FLAGS)

# Tables from the runs already in the store (as left by `make ablations` with the same knobs).
tables: $(STAMP) tex
	MLFLOW_TRACKING_URI=$(TRACKING_URI) $(BIN)/diffseg3d tables --experiment $(EXPERIMENT) --out $(RESULTS)/$(EXPERIMENT) \
	  --grid $(GRID) $(DATA_FLAGS)

# Prints each experiment's link (a grid opens on its runs table with the trial comparison view),
# then runs `mlflow ui` on the store (experiments/tracking/ui_server.py).
UI_PORT ?= 5000
ui: $(STAMP)
	$(BIN)/python -m diffseg3d.experiments.tracking.ui_server --backend-store-uri $(TRACKING_URI) \
	  --host 127.0.0.1 --port $(UI_PORT)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

bench-levers: $(STAMP)
	$(BIN)/python -m benchmarks.run --groups levers

# GPU targets (docs/GPU.md). A GPU machine may have no .venv and no package index: these use
# the venv's python where there is one, else python3, and never the $(STAMP) rule;
# benchmarks/gpu/run_offline.sh makes the project importable there and runs bench-gpu. CI stays
# on the CPU: `make test` runs neither. bench-gpu: the GPU run ordered by what it decides, within
# 6 minutes (python -m benchmarks.gpu_bench --list prints its plan and estimate).
# GPU_BENCH_SMALL=1: the CPU rehearsal (--small). BENCH_GPU_ARGS: more gpu_bench options.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_BENCH_SMALL ?=
BENCH_GPU_ARGS ?=

bench-gpu:
	$(GPU_PYTHON) -m benchmarks.gpu_bench $(if $(GPU_BENCH_SMALL),--small,) $(BENCH_GPU_ARGS)

# The core tests on the GPU; cpu is listed so that jax.debug.callback finds a CPU device.
# benchmarks/gpu/external.py runs the same command as the bench's test_gpu part.
test-gpu:
	XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_PLATFORMS=cuda,cpu $(GPU_PYTHON) -m pytest tests/core \
	  -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) $(RESULTS) .pytest_cache
