# The IOC event backbone. `make up` runs the system, `make test` runs the tests;
# both install what is missing (virtual environment, packages, Kafka, PostgreSQL).
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST := $(PY) -m pytest
WITH_PLATFORM := bash scripts/with-platform.sh
UNIT := shared/tests/unit $(wildcard services/*/tests/unit tools/*/tests/unit)
CONNECTED := shared/tests/connected $(wildcard services/*/tests/connected tools/*/tests/connected)
E2E := $(wildcard tests/e2e)
# Stops and kills a private Kafka and PostgreSQL of its own (never the shared platform).
FAULTS := $(wildcard tests/faults)
# Every package; pyproject.toml makes shared/ and the services' domain packages strict.
TYPED := shared/ioc_shared $(wildcard services/ingest/ingest services/routing/routing services/reporting/reporting services/sync-province/sync_province tools/ioc/ioc_cli)

.PHONY: up test test-unit test-connected test-e2e test-faults chaos lint typecheck bench bootstrap platform-start platform-stop clean docs

up: bootstrap
	bash scripts/up.sh

test: bootstrap lint
	$(WITH_PLATFORM) $(PYTEST) -q -p no:cacheprovider $(UNIT) $(CONNECTED) $(E2E)
	$(if $(FAULTS),$(PYTEST) -q -p no:cacheprovider $(FAULTS))

test-unit: bootstrap
	$(PYTEST) -q $(UNIT)

test-connected: bootstrap
	$(WITH_PLATFORM) $(PYTEST) -q $(CONNECTED)

test-e2e: bootstrap
	$(WITH_PLATFORM) $(PYTEST) -q $(E2E)

# Broker and database stops and kills, mid-stream, on a private platform (a short round).
test-faults: bootstrap
	$(PYTEST) -q -p no:cacheprovider $(FAULTS)

# The same faults, longer and repeated; figures in bench/reliability.json.
chaos: bootstrap
	$(PY) -m bench.reliability

lint: bootstrap
	$(PY) -m ruff check $(wildcard conftest.py shared services tests bench tools examples)
	$(PY) -m mypy $(TYPED)

typecheck: lint

bench: bootstrap
	$(WITH_PLATFORM) $(PY) -m bench

bootstrap:
	@bash scripts/bootstrap.sh

docs: bootstrap
	$(PY) -m ioc_shared.contracts docs/contracts

platform-start:
	bash scripts/platform.sh start

platform-stop:
	bash scripts/platform.sh stop

clean: platform-stop
	rm -rf .run .venv
