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

.PHONY: run test lint bench venv lock lock-remote remote-plugins browser

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

# The `remote` extra (DVC's S3, GCS and SSH plugins), pinned with hashes apart from the main lock
# and within it: whatever both need stays at requirements.lock's version.
REMOTE_LOCK := requirements-remote.lock
lock-remote:
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) \
		&& $(LOCK_TOOLS)/bin/python -m pip install --quiet pip-tools==7.6.2; }
	CUSTOM_COMPILE_COMMAND="make lock-remote" $(LOCK_TOOLS)/bin/pip-compile --quiet \
		--generate-hashes --allow-unsafe --strip-extras --extra remote --constraint $(LOCK) \
		--no-emit-index-url --no-emit-find-links --output-file $(REMOTE_LOCK) pyproject.toml

remote-plugins: $(STAMP)
	$(PIP) install --quiet --require-hashes -r $(REMOTE_LOCK)
	$(PIP) check

# The pipeline on params.yaml, JOBS jobs at a time, left up to date for DVC and Snakemake alike
# (workflow/run says how).
JOBS ?= 2
run: $(STAMP)
	JOBS=$(JOBS) workflow/run

# One worker per core (pytest-xdist), each test file on one worker, so a file's module fixtures
# (the parity project, built once by workflow/run) are built once; `make test TEST_WORKERS=0`
# runs them in this process.
TEST_WORKERS ?= auto
test: $(STAMP)
	pytest -n $(TEST_WORKERS) --dist loadfile

# tests/test_results_page.py opens results/index.html in the distribution's Chromium (driven by
# Playwright, never downloaded); it skips when there is none. This says which one is there, or
# prints the command that installs it (as root; .ci/run runs it itself).
browser:
	@if command -v chromium >/dev/null 2>&1; then command -v chromium; \
	else echo "sudo apt-get install -y --no-install-recommends chromium"; fi

lint: $(STAMP)
	ruff check align tests bench

bench: $(STAMP)
	python bench/loader.py
