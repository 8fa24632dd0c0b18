# All set-up on a fresh machine. `make test` and `make demo` create .venv on first use (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo clean

venv: $(STAMP)

# torch==2.13.0 first: on this machine it is a local CPU wheel; a looser spec would pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# pytest imports torch itself, so it needs OMP_WAIT_POLICY from here; the `sparsefw` command sets it.
# --durations=15: CI (.ci/run) prints the 15 slowest tests.
test: venv
	OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -x -q --durations=15

demo: venv
	$(VENV)/bin/sparsefw demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
