# Rein: `make run` installs and starts the bot; `make test` installs and runs every check.
# Everything is installed from uv.lock (`make lock` refreshes it) into .venv, by uv, which is itself
# installed from PyPI at a pinned version into .tools/: a machine with python3 and make is enough.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_STAMP := $(TOOLS)/.uv-$(UV_VERSION)

# uv runs on this machine's $(PYTHON) (it never downloads an interpreter), trusts the system's CA
# certificates like pip does, and keeps the environment in .venv.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_SYSTEM_CERTS ?= 1
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: run test install lock lint imports typecheck pytest postgres migrate bench image up clean catalog

$(UV_STAMP):
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	touch $(UV_STAMP)

# The locked versions (with their hashes), the dev group, and Rein itself as an editable install.
$(STAMP): pyproject.toml uv.lock $(UV_STAMP)
	$(UV) sync --locked
	touch $(STAMP)

install: $(STAMP)

# Re-resolve uv.lock within pyproject's bounds: every package, or one with `make lock PACKAGE=name`.
lock: $(UV_STAMP)
	$(UV) lock $(if $(PACKAGE),--upgrade-package $(PACKAGE),--upgrade)

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

# The import contracts in pyproject.toml ([tool.importlinter]): layers, no telegram below bot/, no cycles.
imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) postgres
	$(BIN)/pytest -q

test: lint imports typecheck pytest

# The message catalog (docs/TRANSLATIONS.md): every `_`, `ngettext` and `N_` text of bot/ and pipeline/ into the
# template, each language's .po brought up to date (new texts empty, none fuzzy), and all compiled to the .mo files
# the bot reads (committed, so a fresh clone speaks every language). New texts then need their translations.
LOCALES := pipeline/locales
CATALOG_LANGUAGES := es pt_BR de fr it ru uk tr ar
catalog: $(STAMP)
	$(BIN)/pybabel extract --no-default-keywords -k _ -k ngettext:1,2 -k N_ --add-comments=Translators: \
		--no-location --sort-output --no-wrap --project=Rein --copyright-holder=Rein \
		-o $(LOCALES)/rein.pot bot pipeline
	sed -i 's/^"POT-Creation-Date: .*"$$/"POT-Creation-Date: 2026-12-01 00:00+0000\\n"/' $(LOCALES)/rein.pot
	for lang in $(CATALOG_LANGUAGES); do \
		if [ -f $(LOCALES)/$$lang/LC_MESSAGES/rein.po ]; then \
			$(BIN)/pybabel update -D rein -i $(LOCALES)/rein.pot -d $(LOCALES) -l $$lang \
				--no-fuzzy-matching --ignore-obsolete --no-wrap || exit 1; \
		else \
			$(BIN)/pybabel init -D rein -i $(LOCALES)/rein.pot -d $(LOCALES) -l $$lang --no-wrap || exit 1; \
		fi; \
	done
	$(BIN)/pybabel compile -D rein -d $(LOCALES) --statistics

bench: $(STAMP) postgres
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
