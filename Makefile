# Two set-up commands (see README): `make book` and `make test`.
# Both create/update the local virtual environment in .venv, and skip the install when
# pyproject.toml has not changed since the last one.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Nothing is downloaded at run time: make any accidental hub access fail fast instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
NBVAL_FLAGS := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 180 -p tests.nbtiming

.PHONY: install test unit nbtest book notebooks check-pairs readme bench-data clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[book,test]"
	@touch $(STAMP)

# VLMBOOK_SLOW=1 also runs the artifact-retraining checks (about a minute each).
test: $(STAMP)
	$(BIN)/python tools/nb.py check
	VLMBOOK_SLOW=1 $(BIN)/python -m pytest tests -q
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
