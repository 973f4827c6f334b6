# mexlib: make reproduce | make report | make test | make lab | make clean | make clean-runs
PYTHON  ?= python3.11
VENV    := .venv
PY      := $(VENV)/bin/python
PROFILE ?= cpu
EXECUTOR ?= auto
JOBS    ?=
STRICT  ?=
STAMP   := $(VENV)/.installed
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: reproduce report test lab clean clean-runs venv data notebooks

# The environment is created on first use and refreshed when pyproject.toml changes.
# tools/install.py installs with uv (38 s here against pip's 88 s, with PyTorch; it falls back to
# pip where uv cannot be had: INSTALLER=pip asks for pip). Packages are byte-compiled as they
# install: this machine sets PYTHONDONTWRITEBYTECODE, so a module not compiled then would be
# compiled again by every process that imports it (the suite ran slower without).
INSTALLER ?= uv
$(STAMP): pyproject.toml tools/install.py
	$(PYTHON) -m venv $(VENV)
	$(PY) tools/install.py --installer $(INSTALLER) -e '.[test]' 2>&1 \
		| { grep -v "is ignored: it is neither a file nor a directory" || true; }
	$(PY) -c "import mexlib, torch, papermill, nbval, pytest, yaml"
	touch $@

venv: $(STAMP)

data: $(STAMP)
	$(PY) -c "from mexlib.data import load_dataset; print(load_dataset('fashion-mnist'))"

reproduce: $(STAMP)
	$(PY) -m mexlib reproduce --profile $(PROFILE) --executor $(EXECUTOR) $(if $(JOBS),--jobs $(JOBS),) $(if $(STRICT),--strict=$(STRICT),)

# The executed notebooks of the last `make reproduce` as a static site: build/report/<profile>/.
report: $(STAMP)
	$(PY) -m mexlib report --profile $(PROFILE)

# The suite on two workers (pytest-xdist; tests/conftest.py says how the tests are shared out).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS)

# JupyterLab refuses to run as root without --allow-root (containers, CI machines).
lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root,)

# Regenerate notebooks/*.ipynb from notebooks/src/*.py (maintainers).
notebooks: $(STAMP)
	$(PY) tools/make_notebook.py

clean:
	rm -rf build figures/smoke .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

clean-runs:
	rm -rf data/runs
