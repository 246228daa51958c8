# Rein: `make run` installs and starts the bot; `make test` installs and runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint typecheck pytest postgres migrate bench image up clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m bot

# DATABASE_URL from the environment, else from .env (as the bot reads it), else the SQLite default.
migrate: $(STAMP)
	$(BIN)/python -c 'import os, dotenv; from storage.db import DEFAULT_URL, upgrade; \
	upgrade(os.environ.get("DATABASE_URL") or dotenv.dotenv_values(".env").get("DATABASE_URL") or DEFAULT_URL)'

image:
	docker build -f deploy/Dockerfile -t rein:latest .

up:
	docker compose --env-file .env -f deploy/compose.yaml up -d --build

postgres:
	@bash deploy/ensure-postgres.sh

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) postgres
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP) postgres
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
