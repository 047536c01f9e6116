# Two commands for a newcomer: `make up` starts the system, `make test` runs the suite.
# Both create .venv and install a hash-locked set of packages into it on first use.
# The host's pip is used once, to install a pinned uv (hash-checked) into .venv; uv then
# installs the lock, so an old host pip (23.x rejects extras under --require-hashes)
# never decides anything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
# --compile-bytecode as pip does: byte-compiled at install, old packages (jieba) never emit
# SyntaxWarnings at import, which pytest turns into errors.
UVPIP  := UV_COMPILE_BYTECODE=1 $(UV) pip

.PHONY: up test lint unit lock clean

$(UV): requirements/installer.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes \
		-r requirements/installer.txt
	touch $(UV)

# The server needs only the runtime lock; the suite needs the dev lock (a superset).
$(VENV)/.server: $(UV) requirements/server.lock pyproject.toml
	$(UVPIP) install --quiet --python $(BIN)/python --require-hashes -r requirements/server.lock
	$(UVPIP) install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

$(VENV)/.dev: $(UV) requirements/dev.lock pyproject.toml
	$(UVPIP) sync --quiet --python $(BIN)/python --require-hashes requirements/dev.lock
	$(UVPIP) install --quiet --python $(BIN)/python --no-deps -e .
	touch $@ $(VENV)/.server

up: $(VENV)/.server
	$(BIN)/arena up

test: $(VENV)/.dev
	$(BIN)/python scripts/ensure_debian.py
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(BIN)/python scripts/external_tests.py

# Regenerate the locks after changing dependencies in pyproject.toml.
lock: $(UV)
	$(UV) pip compile pyproject.toml --python-version 3.11 --generate-hashes \
		-o requirements/server.lock
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes \
		-o requirements/dev.lock

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache
