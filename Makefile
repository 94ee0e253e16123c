# Two commands for a newcomer: `make run` and `make test`. Each installs what it needs, once:
# `make run` only what serving needs (requirements-runtime.lock), `make test` the dev tools on top.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on
RUNTIME_STAMP := $(VENV)/.runtime-stamp
DEV_STAMP := $(VENV)/.dev-stamp
export HOST ?= 127.0.0.1
export PORT ?= 8000

.PHONY: install install-runtime run test lint format lock bench bench-scale faults soak fuzz clean

$(RUNTIME_STAMP): pyproject.toml requirements-runtime.lock
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s)" % sys.version.split()[0])'
	@echo "==> [1/3] creating $(VENV) (a private Python environment in this folder)"
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "==> [2/3] installing what serving needs (requirements-runtime.lock)"
	$(PIP) -r requirements-runtime.lock
	@echo "==> [3/3] installing stateless-backend itself (editable)"
	$(PIP) --no-deps -e .
	@touch $(RUNTIME_STAMP)
	@echo "==> runtime installed; \`make test\` adds the test and lint tools"

$(DEV_STAMP): $(RUNTIME_STAMP) requirements.lock
	@echo "==> installing the test and lint tools on top (requirements.lock)"
	$(PIP) -r requirements.lock
	@touch $(DEV_STAMP)

install-runtime: $(RUNTIME_STAMP)

install: $(DEV_STAMP)

run: $(RUNTIME_STAMP)
	$(BIN)/stateless migrate
	$(BIN)/stateless serve --host $(HOST) --port $(PORT)

# One pytest-xdist worker per core, each with its own databases (tests/conftest.py); worksteal
# evens out the long tests. `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= auto
test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

lock: install
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 -c requirements.lock -o requirements-runtime.lock

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# Cost flat as data grows (bench/scale.py): e.g. `make bench-scale BENCH_ARGS="--only load"`.
bench-scale: install
	$(BIN)/python -m bench.scale $(BENCH_ARGS)

faults: install
	$(BIN)/python -m bench.faults

soak: install
	$(BIN)/python -m bench.soak

fuzz: install
	$(BIN)/python -m bench.fuzz

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
