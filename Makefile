# Two commands on a fresh machine (Python 3.11 + pip): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MLOPS_HOME ?= $(CURDIR)/var
export DAGSTER_HOME ?= $(MLOPS_HOME)/dagster

.PHONY: setup demo test test-fast lint docs ui bench bench-quick bench-stateful clean browser

# The lock file pins every package; uv installs it in seconds where pip takes minutes.
# Bytecode is compiled once here: uv does not by default, and where PYTHONDONTWRITEBYTECODE
# is set (as on this project's machines) every process would compile every module it imports
# again (import dagster: 2.98 s without .pyc files, 1.23 s with them; mlops_assets.definitions
# 5.82 s vs 2.43 s; every step process, code server, daemon and worker pays it).
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 mlops_assets tests benchmarks
	touch $@

setup: $(VENV)/.installed

demo: setup  ## set up, land the first 12 Bank periods and run the pipeline on them
	$(BIN)/mlops-assets demo

# The UI test drives Debian's chromium with Playwright (Playwright's own browser download
# cannot work here); installed once, as root or through sudo.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

browser: $(CHROMIUM)

test: setup lint docs browser  ## set up and run every test (unit, assets, real servers, a browser)
	$(BIN)/python -m pytest -n 2 --dist load --maxschedchunk 1

test-fast: setup
	$(BIN)/python -m pytest -m "not integration"

docs: setup  ## the docs site (docs/) into build/site; a broken link or anchor fails it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: setup  ## ruff, and the import layers of pyproject.toml's [tool.importlinter]
	$(BIN)/ruff check .
	$(BIN)/lint-imports

ui: setup  ## the Dagster UI on http://127.0.0.1:3000 with this project's instance
	$(BIN)/mlops-assets ui

bench: setup  ## every benchmark, side by side (about 25 min); writes benchmarks/results/latest.json
	$(BIN)/python -m benchmarks.run
	$(MAKE) bench-stateful

# The operator-sequence property test (tests/faults/test_stateful.py), longer than in make test.
bench-stateful: setup
	MLOPS_STATEFUL_EXAMPLES=25 MLOPS_STATEFUL_STEPS=30 $(BIN)/python -m pytest -q \
		tests/faults/test_stateful.py

bench-quick: setup  ## each benchmark once on small inputs (CI runs this through the tests)
	$(BIN)/python -m benchmarks.run --quick

lock:  ## re-resolve the lock file from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf var
