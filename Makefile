# aekit: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
LINT_STAMP := $(VENV)/.lint-installed
LINTED := aekit tests benchmarks examples

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

# Idempotent: re-runs only when the package metadata or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

demo: venv
	$(PY) -m aekit demo --output demo-output

# The docstring examples first, then the suite.  The examples run in importlib mode: the old module
# paths (aekit/network.py, ...) are aliases of modules that live elsewhere, which the default mode
# refuses to collect.
test: venv
	$(PY) -m pytest -q -p no:cacheprovider --doctest-modules --import-mode=importlib aekit
	$(PY) -m pytest -q -p no:cacheprovider tests

# The lint tools at their pinned versions, on top of the package and its test deps.
$(LINT_STAMP): $(STAMP)
	$(PIP) install --quiet -c constraints.txt -e ".[all,test,lint]"
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy aekit

bench: venv
	$(PY) benchmarks/run.py --output BENCHMARKS.md

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
