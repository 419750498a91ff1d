# Entry points for people and CI alike (the README names them; .ci/run calls `make test`).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-bench test lint run

install: $(STAMP)

# torch first: the `local` extra pins torch 2.13.0, whose build (CPU or CUDA) must be chosen before the rest.
# Where it comes from: TORCH_INDEX_URL (empty: pip's own configuration, which on the project's build
# machine serves the CPU build; plain PyPI serves the ~5 GB CUDA build). For the CPU build anywhere:
#   make run TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH ?= torch==2.13.0
TORCH_INDEX_URL ?=
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) '$(TORCH)'
	$(BIN)/pip install -e '.[local,cloud,dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app events projections tests

# pytest's own exit code stands: 5 (no tests collected) fails like any other failure.
test: lint
	$(BIN)/python -m pytest -q

# The main job on the embedded defaults: ingest the corpus end to end (workers in-process), then search.
# The corpus is ../shared/corpus when it exists (the project's shared test documents), else the sample
# set `chronos sample` writes into $(SAMPLES) (six small documents; the question is answered by both).
SHARED_CORPUS := ../shared/corpus
SAMPLES ?= samples
CORPUS ?= $(if $(wildcard $(SHARED_CORPUS)),$(SHARED_CORPUS),$(SAMPLES))
QUESTION ?= In which year was IBM founded?
run: install
	$(if $(filter $(SAMPLES),$(CORPUS)),$(BIN)/chronos sample $(SAMPLES))
	$(BIN)/chronos ingest $(CORPUS) --wait
	$(BIN)/chronos search "$(QUESTION)" -k 5

# The benchmarks' baseline stack (LlamaIndex's Docling reader, PGVectorStore). Its full `docling` pulls
# PyPI's torchvision, which does not import beside the CPU torch file and breaks transformers: remove it
# (nothing here uses Docling's layout models offline).
install-bench: install
	$(BIN)/pip install -e '.[local,cloud,dev,bench]'
	$(BIN)/pip uninstall -y torchvision

# The tiers, runnable separately (tests/conftest.py assigns them): no database / PostgreSQL / processes.
.PHONY: test-unit test-integration test-acceptance
test-unit: install
	$(BIN)/python -m pytest -q -m unit
test-integration: install
	$(BIN)/python -m pytest -q -m integration
test-acceptance: install
	$(BIN)/python -m pytest -q -m acceptance
