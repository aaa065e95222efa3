# The IOC event backbone. `make up` runs the system, `make test` runs the tests;
# both install what is missing (virtual environment, packages, Kafka, PostgreSQL).
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST := $(PY) -m pytest
WITH_PLATFORM := bash scripts/with-platform.sh
UNIT := shared/tests/unit $(wildcard services/*/tests/unit)
CONNECTED := shared/tests/connected $(wildcard services/*/tests/connected)
E2E := $(wildcard tests/e2e)
# Every package; pyproject.toml makes shared/ and the services' domain packages strict.
TYPED := shared/ioc_shared $(wildcard services/ingest/ingest services/routing/routing services/sync-province/sync_province)

.PHONY: up test test-unit test-connected test-e2e lint typecheck bench bootstrap platform-start platform-stop clean

up: bootstrap
	bash scripts/up.sh

test: bootstrap lint
	$(WITH_PLATFORM) $(PYTEST) -q -p no:cacheprovider $(UNIT) $(CONNECTED) $(E2E)

test-unit: bootstrap
	$(PYTEST) -q $(UNIT)

test-connected: bootstrap
	$(WITH_PLATFORM) $(PYTEST) -q $(CONNECTED)

test-e2e: bootstrap
	$(WITH_PLATFORM) $(PYTEST) -q $(E2E)

lint: bootstrap
	$(PY) -m ruff check $(wildcard conftest.py shared services tests bench)
	$(PY) -m mypy $(TYPED)

typecheck: lint

bench: bootstrap
	$(WITH_PLATFORM) $(PY) -m bench

bootstrap:
	@bash scripts/bootstrap.sh

platform-start:
	bash scripts/platform.sh start

platform-stop:
	bash scripts/platform.sh stop

clean: platform-stop
	rm -rf .run .venv
