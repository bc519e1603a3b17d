# SieveDB — `make run` serves with demo data, `make test` runs the whole suite.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 5433
DATA_DIR ?= .sievedb
PYTEST_ARGS ?=

.PHONY: install run test test-deps bench lint format clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/sievedb serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) --models-dir $(DATA_DIR)/models --demo

# Client drivers the tests use that do not come from PyPI (pgJDBC, psqlODBC, a JDK, pgbouncer).
test-deps:
	@missing=""; \
	command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	[ -f /usr/share/java/postgresql.jar ] || missing="$$missing libpostgresql-jdbc-java"; \
	ls /usr/lib/*/odbc/psqlodbcw.so >/dev/null 2>&1 || missing="$$missing odbc-postgresql"; \
	command -v odbcinst >/dev/null || missing="$$missing unixodbc"; \
	[ -f /usr/include/sql.h ] || missing="$$missing unixodbc-dev"; \
	command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing="$$missing pgbouncer"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing test packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "WARNING: missing$$missing (install them as root; their tests will be skipped)"; fi; \
	fi

test: install test-deps
	@set +e; $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: install test-deps
	$(BIN)/python bench/bench_wire.py
	@if [ -f bench/bench_inference.py ]; then $(BIN)/python bench/bench_inference.py; fi
	@if [ -f bench/bench_sampling.py ]; then $(BIN)/python bench/bench_sampling.py; fi
	$(BIN)/python bench/bench_planner.py
	$(BIN)/python bench/bench_approx.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
