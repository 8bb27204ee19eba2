# `make run` and `make test` both set up .venv first, from requirements.lock: every dependency of the
# project and of its dev and slurm extras, pinned with hashes. pip runs again only when the lock or
# pyproject.toml changed. `make lock` re-resolves the lock after a change to pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml | sha256sum | cut -c1-16)
PIP := $(BIN)/python -m pip --disable-pip-version-check
LOCK_TOOLS := .venv-lock-tools
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test lint bench venv lock

venv: $(STAMP)

# The project itself is installed without dependencies and without build isolation, so nothing
# outside the lock is fetched (its build backend, setuptools, is in the lock too).
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes -r $(LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PIP) check || { echo "make: $(LOCK) does not match pyproject.toml: run 'make lock'" >&2; exit 1; }
	rm -f $(VENV)/.installed-*
	touch $@

# Keeps every pin that still fits pyproject.toml; `make lock LOCK_ARGS=--upgrade` moves all of them
# to the newest releases that fit, `LOCK_ARGS='--upgrade-package dvc'` only one.
lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) \
		&& $(LOCK_TOOLS)/bin/python -m pip install --quiet pip-tools==7.6.2; }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes \
		--allow-unsafe --strip-extras --extra dev --extra slurm --build-deps-for editable \
		--no-emit-index-url --no-emit-find-links $(LOCK_ARGS) --output-file $(LOCK) pyproject.toml

# DVC runs one stage at a time, each training job with both cores; two one-thread jobs at a time
# are 1.26x faster on 2 cores (bench/jobs.py). So Snakemake runs the pipeline, JOBS jobs at a
# time, and DVC then records the same outputs (the identities, `dvc commit`): afterwards
# `dvc repro`, `dvc exp run` and `snakemake` all find every stage up to date. The last step
# restores Snakemake's order of modification times, which DVC's commit rewrites.
JOBS ?= 2
run: $(STAMP)
	snakemake all --cores $(JOBS) --set-threads train=1 evaluate=1
	align identify
	dvc commit --force --quiet
	snakemake --cores 1 --quiet --touch all

test: $(STAMP)
	pytest

lint: $(STAMP)
	ruff check align tests bench

bench: $(STAMP)
	python bench/loader.py
