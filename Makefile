# One front door. Every target works from a fresh clone with only Python 3.11 and gcc.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
SEED   ?= 42
SCALE  ?= 1.0

.PHONY: install test lint format demo train serve eval bench clean

$(BIN)/recsys: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==25.2" "wheel==0.45.1" "setuptools==80.9.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(BIN)/recsys

install: $(BIN)/recsys

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check recsys pipelines tests benchmarks migrations
	$(BIN)/ruff format --check recsys pipelines tests benchmarks migrations
	$(BIN)/mypy

format: install
	$(BIN)/ruff format recsys pipelines tests benchmarks migrations
	$(BIN)/ruff check --fix recsys pipelines tests benchmarks migrations

demo: install
	$(BIN)/recsys demo --seed $(SEED) --scale $(SCALE)
	$(BIN)/recsys train
	$(BIN)/recsys feed demo-user-0001 --limit 10
	$(BIN)/recsys evaluate --out reports

train: install
	$(BIN)/recsys train

serve: install
	$(BIN)/recsys serve

eval: install
	$(BIN)/recsys evaluate

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf var reports .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
