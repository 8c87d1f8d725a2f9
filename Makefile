# The one entry point. Installs from uv.lock into .venv (uv itself is bootstrapped from PyPI).
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install run test lint audit fmt openapi migration bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(STAMP): $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --python "$$(command -v $(PYTHON))"
	@touch $@

install: $(STAMP)

## Serve on 127.0.0.1:8000 with the embedded SQLite default (offline mode without STRIPE_API_KEY).
run: install
	$(BIN)/portal-service migrate
	$(BIN)/portal-service serve --host 127.0.0.1 --port 8000

## The whole suite on PostgreSQL, then the SQLite subset (see scripts/test.sh).
test: install
	scripts/test.sh

lint: install
	$(BIN)/ruff check src tests alembic bench
	$(BIN)/ruff format --check src tests alembic bench
	$(BIN)/mypy
	$(BIN)/python scripts/audit_deps.py

## Known vulnerabilities in uv.lock: pip-audit, or PyPI's per-project data where the
## registry serves no per-release JSON (scripts/audit_deps.py says which and what it covered).
audit: install
	$(BIN)/python scripts/audit_deps.py

fmt: install
	$(BIN)/ruff check --fix src tests alembic bench
	$(BIN)/ruff format src tests alembic bench

## Regenerate the committed openapi.json, from an empty environment so the shell's settings
## (a STRIPE_API_KEY, say) cannot change it; tests/foundation/test_openapi.py compares the same way.
openapi: install
	env -i PATH="$$PATH" HOME="$$HOME" $(BIN)/portal-service openapi --output openapi.json

## make migration m="add something"  (autogenerates against a scratch SQLite database)
migration: install
	@test -n "$(m)" || (echo 'usage: make migration m="what it does"' && exit 2)
	@rm -f .migration-scratch.db
	DATABASE_URL=sqlite+aiosqlite:///./.migration-scratch.db $(BIN)/alembic upgrade head
	DATABASE_URL=sqlite+aiosqlite:///./.migration-scratch.db $(BIN)/alembic revision --autogenerate -m "$(m)"
	@rm -f .migration-scratch.db

## Over real HTTP with wrk, against peers in the same run (bench/README.md); about 6 minutes.
## make bench BENCH_ARGS=--quick: a short look (about 2 minutes), bench/README.md untouched.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
