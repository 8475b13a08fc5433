# The README's commands. Only Python 3.11+ and make are needed: everything else goes in .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test check lint typecheck bench infra-check clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Heron needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# An editable install: the checkout is what runs (a path to src/, where heron/ lives).
PIP_INSTALL := $(BIN)/python -m pip install -q

# The demo's closing hints use `heron dev`: the api extra.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[api]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(VENV)/.installed

## Run the order workflow end to end on the embedded SQLite store.
demo: $(VENV)/.installed
	$(BIN)/heron demo

## Run the whole test suite, in TEST_WORKERS processes (pytest-xdist; each starts its own
## servers on free ports). Most tests wait on a server, so more workers than cores pays off.
TEST_WORKERS ?= 4
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

## Everything CI runs: lint, types, tests, the stack checks.
check: lint typecheck test infra-check

## Prove the deployable stack offline: sam validate --lint, cfn-lint, sam build, cdk synth.
infra-check: $(VENV)/.installed-dev
	PATH="$(CURDIR)/$(BIN):$$PATH" bash infra/check.sh

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/steps.py

clean:
	rm -rf $(VENV) .heron .pytest_cache .mypy_cache .ruff_cache
