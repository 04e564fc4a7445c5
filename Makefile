# Two commands for a fresh machine: `make repro` (pipeline on the embedded default) and
# `make test` (tests + lint). Both create .venv when missing and are quick when set up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev

.PHONY: repro test lint format bench paper teacher clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(STAMP)

repro: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: $(DEV)
	$(BIN)/python -m pytest
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks docs

format: $(DEV)
	$(BIN)/ruff format src tests benchmarks docs
	$(BIN)/ruff check --fix src tests benchmarks docs

# The paper's fusion x loss and init axes (paper/dvc.yaml) on their own data, every patient split x seed.
paper: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro paper/dvc.yaml

# The paper's teacher axis (paper/teacher/dvc.yaml): k-fold ensemble, pseudo-labels, student, controls.
teacher: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro paper/teacher/dvc.yaml

bench: $(DEV)
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
