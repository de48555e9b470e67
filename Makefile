# Every target does its own set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= demo_output

.PHONY: install test test-all demo bench checks checks-full clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The default suite (< ~10 min on 2 cores); slow statistical tests run with `make test-all`.
test: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m pytest -n 2 tests

demo: $(STAMP)
	$(VENV)/bin/hclstat demo --out $(OUT)

checks: $(STAMP)
	$(VENV)/bin/hclstat check all --quick --out checks_output

# The figures of paper_checks/README.md (about half an hour on 2 cores).
checks-full: $(STAMP)
	$(VENV)/bin/hclstat check all --out checks_output_full

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(OUT) checks_output checks_output_full .pytest_cache build *.egg-info
