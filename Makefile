# Entry points for people and CI alike (the README names them; .ci/run calls `make test`).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint run

install: $(STAMP)

# torch first: the `local` extra pins the CPU build, which must be resolved before the rest.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[local,cloud,dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy app events projections tests

# pytest's own exit code stands: 5 (no tests collected) fails like any other failure.
test: lint
	$(BIN)/python -m pytest -q

# Placeholder: the lead finalizes the query.
run: install
	$(BIN)/chronos ingest ../shared/corpus --wait
	$(BIN)/chronos search "..."
