# The two commands a new user needs: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-corpus lint format bench serve clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bastion demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

test-corpus: $(STAMP)
	BASTION_CORPUS=all $(BIN)/python -m pytest -q -m corpus tests/sql/test_corpus_differential.py

bench: $(STAMP)
	$(BIN)/python -m evals.bench

serve: $(STAMP)
	$(BIN)/bastion serve --transport http

clean:
	rm -rf $(VENV) .bastion .pytest_cache .ruff_cache
