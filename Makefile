# The two set-up commands: `make run` (Tarifa on the embedded default) and `make test` (whole suite).
# Both create .venv on first use, so a fresh machine needs only Python 3.11 and make.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: run test venv bench clean

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

run: venv
	$(VENV)/bin/tarifa run

# Pass 1: the embedded default (SQLite, in-process wake-ups, in-memory limits); tests that need
# a real service skip. Pass 2, when TARIFA_TEST_POSTGRES_URL is set: the whole suite again on
# PostgreSQL with RabbitMQ and Redis (TARIFA_REQUIRE_SERVICES=1 turns any skip there into a failure).
test: venv
	env -u TARIFA_DATABASE_URL -u TARIFA_BROKER_URL -u TARIFA_REDIS_URL -u TARIFA_REQUIRE_SERVICES \
		TARIFA_VAR_DIR=$(CURDIR)/var/test $(VENV)/bin/pytest -q
	@if [ -n "$$TARIFA_TEST_POSTGRES_URL" ]; then \
		echo "--- service pass: PostgreSQL $${TARIFA_TEST_POSTGRES_URL} broker=$${TARIFA_TEST_BROKER_URL:-none} redis=$${TARIFA_TEST_REDIS_URL:-none}"; \
		TARIFA_DATABASE_URL="$$TARIFA_TEST_POSTGRES_URL" TARIFA_BROKER_URL="$$TARIFA_TEST_BROKER_URL" \
		TARIFA_REDIS_URL="$$TARIFA_TEST_REDIS_URL" TARIFA_VAR_DIR=$(CURDIR)/var/test \
		$(VENV)/bin/pytest -q -rs; \
	else \
		echo "--- service pass skipped: TARIFA_TEST_POSTGRES_URL is not set"; \
	fi

bench: venv
	$(VENV)/bin/python bench/runtime.py

clean:
	rm -rf $(VENV) var
