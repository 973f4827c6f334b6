# mexlib: make reproduce | make report | make test | make lab | make clean | make clean-runs
PYTHON  ?= python3.11
VENV    := .venv
PY      := $(VENV)/bin/python
PROFILE ?= cpu
EXECUTOR ?= inline
JOBS    ?=
STAMP   := $(VENV)/.installed
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: reproduce report test lab clean clean-runs venv data notebooks

# The environment is created on first use and refreshed when pyproject.toml changes. pip
# byte-compiles every package as it installs (a third of the install's time): this machine sets
# PYTHONDONTWRITEBYTECODE, so a module pip did not compile would be compiled again by every
# process that imports it (--no-compile made the suite slower, not faster).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 \
		| { grep -v "is ignored: it is neither a file nor a directory" || true; }
	$(PY) -c "import mexlib, torch, papermill, nbval, pytest, yaml"
	touch $@

venv: $(STAMP)

data: $(STAMP)
	$(PY) -c "from mexlib.data import load_dataset; print(load_dataset('fashion-mnist'))"

reproduce: $(STAMP)
	$(PY) -m mexlib.reproduce --profile $(PROFILE) --executor $(EXECUTOR) $(if $(JOBS),--jobs $(JOBS),)

# The executed notebooks of the last `make reproduce` as a static site: build/report/<profile>/.
report: $(STAMP)
	$(PY) -m mexlib.report --profile $(PROFILE)

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
