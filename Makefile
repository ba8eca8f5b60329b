# finsup: two commands from a fresh machine with python3 and make.
#   make demo   set everything up, run the main job on the embedded defaults
#   make test   set everything up, run lint, types and the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

export FINSUP_HOME ?= $(CURDIR)/.finsup
export DAGSTER_HOME ?= $(FINSUP_HOME)/dagster_home
export FINSUP_LEDGER_URL ?= sqlite:///$(FINSUP_HOME)/ledger.db
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export GX_ANALYTICS_ENABLED := false
export UV_PYTHON_DOWNLOADS := never

.PHONY: install demo dev test lint fmt bench clean chromium rabbitmq

# uv itself, bootstrapped from PyPI into a private venv (no curl | sh needed).
$(UV):
	$(PYTHON) -m venv $(TOOLS) || $(PYTHON) -m pip install --quiet --target $(TOOLS) uv==$(UV_VERSION)
	[ -x $(UV) ] || $(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# Everything pinned in uv.lock, the project included (editable). Bytecode compiled at
# install: PYTHONDONTWRITEBYTECODE may be set, and then every dbt, dagster and finsup
# subprocess of the tests would compile its imports again (dagster's import: 5.2 s -> 2.9 s CPU).
$(BIN)/finsup: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --compile-bytecode
	@touch $@

# dagster-dbt reads the dbt manifest when the definitions load: parse it once here.
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project/models dbt_project/macros dbt_project/tests -type f 2>/dev/null) dbt_project/dbt_project.yml dbt_project/profiles.yml
$(MANIFEST): $(BIN)/finsup $(DBT_SOURCES)
	PATH=$(CURDIR)/$(BIN):$$PATH FINSUP_WAREHOUSE_PATH=$${FINSUP_WAREHOUSE_PATH:-unused.duckdb} \
		$(BIN)/python -c "from finsup_dagster.resources.dbt import prepare; prepare()"

install: $(BIN)/finsup $(MANIFEST)

demo: install
	$(BIN)/finsup demo

dev: install
	$(BIN)/finsup dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy finsup_dagster benchmarks

# The browser tests drive Debian's chromium through Playwright (never `playwright
# install`): install the package when it is missing, as root or through sudo.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
		else echo "chromium is missing: run 'apt-get install -y chromium' as root" >&2; exit 1; fi; \
		$$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }; \
	}

# The celery executor's test (tests/test_celery_executor.py) needs RabbitMQ on
# 127.0.0.1:5672: start the server when nothing answers there (Debian's package,
# installed when missing, as for chromium), and wait until it takes connections.
rabbitmq:
	@if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
		else echo "RabbitMQ is not answering on 127.0.0.1:5672: run 'rabbitmq-server -detached' as root" >&2; exit 1; fi; \
		command -v rabbitmq-server >/dev/null 2>&1 || PATH=$$PATH:/usr/sbin command -v rabbitmq-server >/dev/null 2>&1 || \
			$$SUDO apt-get install -y rabbitmq-server || { $$SUDO apt-get update && $$SUDO apt-get install -y rabbitmq-server; }; \
		echo "starting RabbitMQ (rabbitmq-server -detached)"; \
		$$SUDO env PATH=$$PATH:/usr/sbin rabbitmq-server -detached || $$SUDO service rabbitmq-server start; \
		for i in $$(seq 1 90); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done; \
		(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || { echo "RabbitMQ did not start: see /var/log/rabbitmq/" >&2; exit 1; }; \
	fi

# Two workers: the suite is mostly waiting on databases and subprocesses.
test: lint chromium rabbitmq
	DAGSTER_HOME=$$(mktemp -d) $(BIN)/dagster definitions validate -w workspace.yaml
	$(BIN)/pytest -n 2 --durations=15

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/reconcile.py

clean:
	rm -rf $(FINSUP_HOME) .pytest_cache .mypy_cache .ruff_cache .hypothesis
