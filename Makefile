# One command runs the main job on the built-in data set, one runs the tests;
# both create the virtual environment and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,lite,serving]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m trainers.classify

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check keypoint_gnn trainers tests

clean:
	rm -rf $(VENV) runs .pytest_cache
