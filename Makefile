# `make run` and `make test` both set up .venv first; pip runs again only when pyproject.toml changed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test lint bench venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	dvc repro

test: $(STAMP)
	pytest

lint: $(STAMP)
	ruff check align tests bench

bench: $(STAMP)
	python bench/loader.py
