# Two entry points that work on a fresh machine with only Python 3.10+ and make:
#   make demo   create .venv, install, run the demo job on the embedded local cluster
#   make test   create .venv, install with the dev extra, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench clean venv chromium docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m factorflow demo

test: $(STAMP) qlib-venv chromium
	$(PY) -m pytest -q
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q tests/gpu

# headless Chromium for tests/test_plots.py (renders a saved bokeh report); Debian's package, as root
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }; } || \
	  echo "warning: could not install chromium; tests/test_plots.py will skip its browser check"

# the documentation site (mkdocs-material) into build/site; tests/test_site.py builds it with --strict too
docs: $(STAMP)
	$(PY) -m mkdocs build --strict -d build/site

bench: $(STAMP)
	$(PY) benchmarks/bench_kernels.py
	$(PY) benchmarks/bench_compute.py
	$(PY) benchmarks/bench_evaluate.py
	$(PY) benchmarks/bench_cluster.py
	$(PY) benchmarks/bench_ticks.py
	$(PY) benchmarks/bench_libraries.py

# Qlib (pyqlib) lives in its own virtualenv, never in $(VENV): it pins pyarrow and
# pulls jupyter/mlflow/cvxpy. tests/qlib_harness.py runs tests/qlib_eval.py with it in
# a subprocess. Failing softly: if pyqlib does not install, the stamp is written
# anyway with the pip log next to it, and the Qlib parity tests skip with that reason
# (rm -rf $(QLIB_VENV) to retry).
.PHONY: qlib-venv
QLIB_VENV ?= .venv-qlib
QLIB_REQ ?= pyqlib==0.9.7
QLIB_STAMP := $(QLIB_VENV)/.installed-qlib

$(QLIB_STAMP):
	@echo "qlib-venv: building $(QLIB_VENV) with $(QLIB_REQ) (several minutes, once)"
	@rm -f $(QLIB_VENV)/install-failed.log
	@( $(PYTHON) -m venv $(QLIB_VENV) \
	   && $(QLIB_VENV)/bin/pip install -q $(QLIB_REQ) \
	   && $(QLIB_VENV)/bin/python -c "import qlib, qlib.data.ops" ) > $(QLIB_VENV).log 2>&1 \
	  || { mkdir -p $(QLIB_VENV); mv $(QLIB_VENV).log $(QLIB_VENV)/install-failed.log; \
	       echo "qlib-venv: FAILED, Qlib parity tests will skip (see $(QLIB_VENV)/install-failed.log)" >&2; }
	@rm -f $(QLIB_VENV).log
	@touch $(QLIB_STAMP)

qlib-venv: $(QLIB_STAMP)

clean:
	rm -rf $(VENV) demo-out .pytest_cache build *.egg-info
