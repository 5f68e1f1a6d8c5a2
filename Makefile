# expansion-scoring: `make` lists the targets. `make demo` and `make test` work on a fresh clone.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= data/demo
DEMO_ACCOUNTS ?= 2000
DEMO_MONTHS ?= 18

.PHONY: help setup demo test test-all lint format bench serve clean chromium pg java bench-spark

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: $(VENV)/.installed ## Create .venv and install the package with dev tools

demo: setup ## Simulate, validate, train, promote, then score into the embedded SQLite CRM
	$(BIN)/expansion simulate --accounts $(DEMO_ACCOUNTS) --months $(DEMO_MONTHS) --seed 42 --out $(DEMO_DIR)
	$(BIN)/expansion validate $(DEMO_DIR)
	$(BIN)/expansion train --data $(DEMO_DIR)
	@# promote exits 2 when it refuses a model below the quality floor (it prints why, one line
	@# per criterion); the demo goes on, and scoring uses that model's rule baseline instead.
	$(BIN)/expansion promote || [ $$? -eq 2 ]
	$(BIN)/expansion snapshot --data $(DEMO_DIR)
	$(BIN)/expansion score --data $(DEMO_DIR) --to sqlite:///models/crm.db --top 10

test: setup chromium java ## Run the default test suite (CI runs `make lint` then this)
	scripts/start_postgres.sh install
	$(BIN)/pytest -q

test-all: setup ## Run every test, the slow ones too
	$(BIN)/pytest -q -m ''

lint: setup ## ruff lint and format check (CI runs it before the tests)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup ## Benchmarks, printed as ratios against references measured in the same run
	$(BIN)/python -m benchmarks

bench-spark: setup java ## Spark local[2] vs DuckDB: training sets and a 100k-account batch
	$(BIN)/python -m benchmarks spark

serve: setup ## Start the scoring API (BentoML) on port 3000
	$(BIN)/expansion serve

chromium: ## Headless Chromium for the report test (Debian package, installed if missing)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

java: ## Java for local-mode Spark tests (Debian package, installed if missing)
	@command -v java >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }

pg: ## Start a local PostgreSQL in .pg/ and print its URL (for expansion score --to)
	scripts/start_postgres.sh start .pg

clean: ## Remove the venv, caches and generated data (keeps models/ registry)
	rm -rf $(VENV) .pytest_cache .ruff_cache data build *.egg-info
