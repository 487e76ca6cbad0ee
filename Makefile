# Two entry points that work on a fresh machine with only Python 3.10+ and make:
#   make demo   create .venv, install, run the demo job on the embedded local cluster
#   make test   create .venv, install with the dev extra, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m factorflow demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_kernels.py
	$(PY) benchmarks/bench_compute.py
	$(PY) benchmarks/bench_cluster.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache build *.egg-info
