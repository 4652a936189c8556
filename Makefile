# The project's two commands: `make demo` and `make test`. Both set up .venv with pip first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export TOKENIZERS_PARALLELISM := false
# Keep freed tensor memory in the heap instead of unmapping and re-faulting it every step (see MALLOC_ENV in
# srl_assets/assets/training_support.py, which sets the same for every training child).
export MALLOC_MMAP_THRESHOLD_ := 33554432
export MALLOC_TRIM_THRESHOLD_ := 1073741824
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: setup demo compare test check ui serve clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

setup: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

demo: setup
	$(BIN)/python -m srl_assets.demo $(DEMO_ARGS)

compare: setup
	$(BIN)/python -m srl_assets.compare $(COMPARE_ARGS)

check: setup
	$(BIN)/dg check defs

# Two pytest-xdist workers (each test file, or the tests sharing the Dagster webserver, on one worker; see
# tests/conftest.py); TEST_WORKERS=0 runs the suite in this one process. One torch/OpenMP thread per process:
# with torch's default (a thread per core) the two workers' training children oversubscribe two cores
# (measured on 2 cores: 534 s with the default, 495 s with one thread).
TEST_WORKERS ?= 2
TEST_THREADS ?= 1
test: check
	OMP_NUM_THREADS=$(TEST_THREADS) MKL_NUM_THREADS=$(TEST_THREADS) $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

ui: setup
	$(BIN)/dagster dev -w workspace.yaml

# The serving API (FastAPI): keys from SRL_API_KEYS (`key` or `key:train`, comma-separated).
SRL_API_HOST ?= 127.0.0.1
SRL_API_PORT ?= 8000
export SRL_API_HOST SRL_API_PORT
serve: setup
	$(BIN)/uvicorn --factory srl_assets.serving.app:create_app --host $(SRL_API_HOST) --port $(SRL_API_PORT)

clean:
	rm -rf $(DAGSTER_HOME)
