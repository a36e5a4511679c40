# Bascule: the two commands that matter are `make demo` and `make test`.
# Everything else here is what they need, installed from this repository's own pins.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SITE := $(VENV)/lib/python3.11/site-packages
PY_STAMP := $(VENV)/.bascule-installed
NODE_STAMP := node_modules/.bascule-installed
# pip's own noise about this machine's extra find-links folders is not ours to show.
PIP_QUIET := 2> >(grep -v "^WARNING: Location" >&2)

.PHONY: help setup demo demo-distributed down down-distributed test test-fast lint bench bench-scale bench-tablediff bench-large screenshots clean

help:
	@echo "make demo   run the demo migration end to end on local stand-ins (no cloud account)"
	@echo "make test   install what the tests need and run the whole suite"
	@echo "make down   stop everything the demo started"
	@echo "make demo-distributed   the same two workloads on CeleryExecutor (Redis, PostgreSQL, FAB, 2 workers); make down-distributed"
	@echo "make lint   ruff, mypy and the import-layer contracts;  make bench   run the benchmarks in bench/"
	@echo "make bench-scale   object cutover at 1k and 10k objects, ~15 min (SCALE_ARGS=--large: also 100k)"
	@echo "make bench-tablediff   table diff at 1M rows;  make bench-large   the same at 10M rows (~15 min)"

$(PY_STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt $(PIP_QUIET)
	# include/ holds the domain package, plugins/ the Airflow glue: both importable everywhere.
	printf '%s\n%s\n' "$(CURDIR)/include" "$(CURDIR)/plugins" > $(SITE)/bascule.pth
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser tests drive Debian's chromium (playwright cannot download browsers here).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get install -y chromium || (apt-get update && apt-get install -y chromium); \
	else echo "chromium is missing: run 'sudo apt-get install -y chromium' (the browser tests need it)" >&2; exit 1; fi

setup: $(PY_STAMP) $(NODE_STAMP) $(CHROMIUM)

demo: setup
	$(PY) scripts/demo.py up

# The machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) must be running.
demo-distributed: setup
	$(PY) scripts/demo_distributed.py

down-distributed:
	$(PY) scripts/celery_stack.py down

down:
	@if [ -x $(PY) ]; then $(PY) scripts/demo.py down; else $(PYTHON) scripts/devstack.py down; fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	# The layers of docs/architecture.md, as contracts (pyproject.toml, [tool.importlinter]).
	$(VENV)/bin/lint-imports --no-cache

# Includes tests/distributed (marker `distributed`): they start scripts/celery_stack.py once
# per session and need the machine's PostgreSQL and Redis. scripts/run_tests.py runs them
# beside the other tiers, in a second pytest process (why: its docstring).
test: setup lint
	$(PY) scripts/run_tests.py

test-fast: setup
	$(PY) -m pytest -m unit

# docs/screenshots/*.png, taken by the control room's browser tests (scripts/screenshots.py).
screenshots: setup
	$(PY) scripts/screenshots.py

bench: setup
	$(PY) bench/parse.py

bench-scale: setup
	$(PY) bench/scale.py $(SCALE_ARGS)

# Table diff against count(*) and a naive diff (docs/benchmarks.md#table-diff-benchtablediffpy):
# 1M rows, a few minutes; bench-large: 10M rows (~1.3 GB per side, ~15 min), not CI.
bench-tablediff: setup
	$(PY) bench/tablediff.py $(TABLEDIFF_ARGS)

bench-large: setup
	$(PY) bench/tablediff.py --large $(TABLEDIFF_ARGS)

clean: down
	rm -rf .bascule
