# Two entry points for a newcomer: `make book` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# every core: notebooks and training trials run in parallel (make book JOBS=1 for one at a time)
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: setup test mutate book sync clean-book clean

setup: $(VENV)/.installed

# torch first, pinned: its CPU wheel; every other pin admits it, so nothing pulls another build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# On demand, not in CI: plants known bugs one at a time and checks that the tests catch each.
mutate: setup
	$(BIN)/python tests/mutation.py

# Runs every notebook with papermill (processes in parallel), then renders the HTML book.
book: setup
	$(BIN)/python book/build.py --jobs $(JOBS)

# Re-pair the notebooks after editing a book/*.py source.
sync: setup
	$(BIN)/jupytext --sync book/[0-9]*.py

clean-book:
	rm -rf _build book/_executed

clean: clean-book
	rm -rf _data
