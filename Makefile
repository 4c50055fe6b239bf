# Two set-up commands (see README): `make book` and `make test`.
# Both install the environment in .venv exactly as uv.lock pins it (uv reads only the lock, so
# a machine's pip configuration or cache cannot change a version), and skip the install when
# neither pyproject.toml nor uv.lock changed since the last one.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# uv itself is pinned and installed from PyPI into .tools/ (it is a single static binary).
UV_VERSION := 0.13.9
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
LATEST := .venv-latest
# Never download a Python build: use the interpreter named by PYTHON.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Nothing is downloaded at run time: make any accidental hub access fail fast instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
NBVAL_FLAGS := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 180 -p tests.nbtiming

.PHONY: install lock test-latest test unit nbtest book notebooks check-pairs readme bench-data clean

install: $(STAMP)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra book --extra test --python $(PYTHON)
	@touch $(STAMP)

# Regenerate uv.lock from pyproject.toml's ranges (commit both together).
lock: $(UV)
	$(UV) lock --python $(PYTHON)
	$(PYTHON) tools/envfile.py

# The newest versions pyproject.toml allows, in a separate environment: unit tests + Chapter 1.
# A release that breaks us shows up here before a reader installs it.
test-latest: $(UV)
	rm -rf $(LATEST)
	$(UV) venv -q $(LATEST) --python $(PYTHON)
	$(UV) pip install -q --python $(LATEST)/bin/python --resolution highest -e ".[book,test]"
	$(LATEST)/bin/vlmbook info
	$(LATEST)/bin/python -m pytest tests -q -x
	$(LATEST)/bin/python -m pytest $(NBVAL_FLAGS) notebooks/01_rate_distortion.ipynb -q

# VLMBOOK_SLOW=1 also runs the artifact-retraining checks (about a minute each).
test: $(STAMP)
	$(BIN)/python tools/nb.py check
	VLMBOOK_SLOW=1 $(BIN)/python -m pytest tests -q --durations=15
	$(BIN)/python -m pytest $(NBVAL_FLAGS) notebooks -q

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

nbtest: $(STAMP)
	$(BIN)/python -m pytest $(NBVAL_FLAGS) notebooks -q

book: $(STAMP)
	$(BIN)/python tools/nb.py check
	rm -rf _build/html
	$(BIN)/jupyter-book build . --warningiserror --keep-going --builder html
	@echo "Book built: _build/html/index.html"

# Re-execute chapters in place (outputs + measured runtime), resync pairs, update README table.
notebooks: $(STAMP)
	$(BIN)/python tools/nb.py execute $(NB)

check-pairs: $(STAMP)
	$(BIN)/python tools/nb.py check

readme: $(STAMP)
	$(BIN)/python tools/nb.py readme

bench-data: $(STAMP)
	$(BIN)/python -m vlmbook.bench data

clean:
	rm -rf _build .pytest_cache
