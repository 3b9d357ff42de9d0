# pipekit developer commands. Everything installs into .venv; nothing else is needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO_HOME ?= $(CURDIR)/.pipekit-demo

.PHONY: demo test test-all bench lint clean

$(VENV)/.base: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install -e '.[test]'
	$(PIP) install -e tests/plugins/pipekit-example-serializer
	$(PIP) install -e tests/plugins/pipekit-example-versioner
	$(PIP) install --no-build-isolation --no-deps -e docs/examples/pipekit-example-executor
	touch $@

demo: $(VENV)/.base
	@PIPEKIT_HOME=$(DEMO_HOME) $(PY) docs/examples/demo.py

test: $(VENV)/.test
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow"

test-all: $(VENV)/.test
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "slow or not slow"

bench: $(VENV)/.test
	$(PY) tests/bench/run.py $(ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check pipekit plugins migrations tests docs/examples docs/benchmarks

clean:
	rm -rf $(VENV) $(DEMO_HOME) build *.egg-info .pytest_cache .ruff_cache .hypothesis
