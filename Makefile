# Afterword: make install | run | test | lint | fmt | migrate | schema | check | bench | up | down | lock | client-models
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export UV_PYTHON_DOWNLOADS := never

.DEFAULT_GOAL := help
.PHONY: help install run test test-integration chaos browser wrk lint fmt migrate schema check bench up down lock client-models clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install the locked dependencies

$(VENV)/.installed: pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(BIN)/uv sync --locked --quiet
	@touch $@

run: install ## Migrate, then run gateway + jobs worker + SMTP catcher in the foreground (Ctrl-C stops all)
	@# services/devstack: Postgres and Redis must answer (a private server under var/ for a default
	@# URL that does not), then the migrations, a development API key unless API_KEYS is set, and
	@# Procfile.dev under honcho; the private servers stop when it ends.
	@exec $(BIN)/python -m services.devstack

migrate: install ## Apply migrations/*.sql to DATABASE_URL (creates the database if missing)
	@$(BIN)/python -m services.ledger.migrate

schema: install ## Rewrite migrations/schema.sql from a throwaway database migrated from zero (needs pg_dump)
	@$(BIN)/python -m services.ledger.schema_dump

check: install ## Say whether Postgres, Redis, SMTP and a worker are reachable
	@$(BIN)/python -m services.devstack.preflight --workers

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install ## Format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install lint browser wrk ## Lint, then every test (unit, integration, faults, bench) against throwaway servers
	@# Two pytest processes side by side: the fault and bench tests, which mostly wait on the
	@# processes they start, kill and restart, beside the unit and integration tests. Each has its
	@# own databases, Redis servers and ports; the faults' output follows once both have ended.
	@mkdir -p test-artifacts
	@$(BIN)/pytest tests/faults tests/bench > test-artifacts/faults-and-bench.log 2>&1 & faults=$$!; \
	$(BIN)/pytest tests/unit tests/integration; rest=$$?; \
	wait $$faults; slow=$$?; \
	echo; echo "== tests/faults and tests/bench"; cat test-artifacts/faults-and-bench.log; \
	[ $$rest -eq 0 ] && [ $$slow -eq 0 ]

chaos: install ## The chaos test for 5 minutes (make test runs it for 24 s): kills under a keyed load
	CHAOS_SECONDS=$${CHAOS_SECONDS:-300} $(BIN)/pytest tests/faults/test_chaos.py -s

browser: ## Install Debian's chromium for the dashboard tests, if missing (needs root; else they are skipped)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium for the dashboard tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium is missing, so the dashboard tests will be skipped. Install it with: sudo apt-get install chromium"; \
	fi

test-integration: install ## Only the integration tests (GATEWAY_URL=... runs them against a running stack)
	$(BIN)/pytest -m integration

bench: install wrk ## Our stack against the seed and plain ARQ, in one run (table, bench/results/*.json|png)
	$(BIN)/python -m bench

wrk: ## Install Debian's wrk (the bench's load generator), if missing (needs root; else the bench smoke test is skipped)
	@if command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's wrk for the bench"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	else \
		echo "wrk is missing, so the bench cannot run and its smoke test is skipped. Install it with: sudo apt-get install wrk"; \
	fi

up: ## docker compose: build and start the whole stack
	docker compose up --build -d

down: ## docker compose: stop the stack
	docker compose down

lock: ## Re-resolve uv.lock after editing pyproject.toml
	$(BIN)/uv lock

client-models: install ## Regenerate the Python client's payload models from services/contract.py
	$(BIN)/python clients/python/generate_models.py

clean: ## Remove caches and local state (keeps .venv)
	rm -rf .mypy_cache .ruff_cache .pytest_cache var
