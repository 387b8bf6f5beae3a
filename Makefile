# diffseg3d front door. Every target that needs the virtual environment creates it when missing,
# so `make test` (or `make ablations`) alone works on a fresh machine.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
# make ablations knobs: PROFILE=smoke|quick|paper, GRID=<grid yaml>, DATA=<prepared folder>,
# OUT=<runs folder holding mlflow.db, artifacts and Tune results>, RAY_ADDRESS=<cluster>.
PROFILE  ?= quick
GRID     ?= experiments/grids/paper.yaml
OUT      ?= runs
DATA     ?= data/phantom
RESULTS  ?= results
EXPERIMENT ?= paper
PHANTOM_CASES ?= 24
MAX_CONCURRENT ?= 2
PYTEST_ARGS ?=

export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_AUTH_MODE ?= disabled
export MLFLOW_TRACKING_URI ?= sqlite:///$(abspath $(OUT))/mlflow.db

.PHONY: setup tex test lint ablations tables ui bench data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# pdflatex (with booktabs) for the LaTeX tables; installed from Debian's packages when absent.
tex:
	@command -v pdflatex >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends texlive-latex-recommended >/dev/null; \
	  else echo "pdflatex missing: install texlive-latex-recommended (LaTeX tests will fail)"; fi; }

setup: $(STAMP) tex

test: $(STAMP) tex
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check core experiments analysis tests benchmarks

$(DATA)/dataset.json: | $(STAMP)
	$(BIN)/diffseg3d data phantom --out $(DATA) --cases $(PHANTOM_CASES)

data: $(DATA)/dataset.json

ablations: $(STAMP) tex $(DATA)/dataset.json
	$(BIN)/diffseg3d ablate $(GRID) --profile $(PROFILE) --data $(DATA) --out $(OUT) \
	  --max-concurrent $(MAX_CONCURRENT)
	$(BIN)/diffseg3d tables --experiment $(EXPERIMENT) --out $(RESULTS)/$(EXPERIMENT)

tables: $(STAMP) tex
	$(BIN)/diffseg3d tables --experiment $(EXPERIMENT) --out $(RESULTS)/$(EXPERIMENT)

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port 5000

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(OUT) $(RESULTS) .pytest_cache
