# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
VNA := $(VENV)/bin/vna
HOME_DIR ?= var
PYTEST_ARGS ?=

.PHONY: install system venv ohif run test lint typecheck unit integration bench bench-dicomweb clean

install: system venv ohif

system:
	@bash deploy/install-system.sh

# the plugin runs in Orthanc's embedded (system) Python: the venv must use the same one
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

# the prebuilt OHIF viewer from npm, integrity-checked, unpacked in viewer/ohif (not committed)
ohif: venv
	$(PY) -m viewer.fetch

run: install
	$(VNA) up --home $(HOME_DIR) --offer-demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test: install lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m bench.ingest

bench-dicomweb: install
	$(PY) -m bench.dicomweb $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
