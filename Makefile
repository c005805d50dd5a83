# Two commands for a fresh machine: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench setup clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Stripeflow needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e ".[dev]"
	@touch $@

setup: $(BIN)/.installed

## run: the Prefect server + UI (127.0.0.1:4200), the webhook bridge (127.0.0.1:8000), the worker,
##      and, when no Stripe webhook secret is configured, the demo (in .stripeflow/demo). Ctrl-C stops everything.
run: setup
	$(BIN)/stripeflow run

## test: lint and type-check, then the whole suite (real Prefect server, real bridge, real SQLite/PostgreSQL, fakes)
test: setup
	$(BIN)/ruff check stripeflow tests bench
	$(BIN)/ruff format --check stripeflow tests bench
	$(BIN)/mypy stripeflow
	$(BIN)/pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check stripeflow tests bench
	$(BIN)/ruff format --check stripeflow tests bench
	$(BIN)/mypy stripeflow

bench: setup
	PYTHONPATH=. $(BIN)/python bench/bridge.py
	PYTHONPATH=. $(BIN)/python bench/fuzz.py
	PYTHONPATH=. $(BIN)/python bench/webhook_to_deal.py
	PYTHONPATH=. $(BIN)/python bench/crm_burst.py
	PYTHONPATH=. $(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) .stripeflow
