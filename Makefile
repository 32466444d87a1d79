# Two commands on a fresh machine: `make run` (the default search) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/blendprune search

test: $(STAMP)
	$(VENV)/bin/ruff check pruning search tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest

clean:
	rm -rf $(VENV) mlruns mlflow.db runs .pytest_cache
