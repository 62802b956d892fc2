# Two commands on a fresh machine: `make run` and `make test`. Each bootstraps what it needs
# (a .venv and node_modules) and installs nothing on a second run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: run test lint format bench bootstrap compile clean

bootstrap: $(VENV_STAMP) $(NODE_STAMP)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The daemon and the API on the embedded stack (anvil state, SQLite and keys in var/).
run: bootstrap
	$(PY) -m granular.cli run

test: bootstrap lint
	$(PY) -m pytest

lint: bootstrap
	$(VENV)/bin/ruff check src tests scripts bench
	$(VENV)/bin/ruff format --check src tests scripts bench
	$(VENV)/bin/mypy --strict src

format: bootstrap
	$(VENV)/bin/ruff check --fix src tests scripts bench
	$(VENV)/bin/ruff format src tests scripts bench

bench: bootstrap
	$(PY) scripts/bench.py

compile: bootstrap
	$(PY) scripts/compile_contracts.py

clean:
	rm -rf $(VENV) node_modules var bench/report.json deployments/local.json
