# The two commands of the README. Each installs libtorch on first use (scripts/setup-libtorch.sh,
# idempotent) and points the build and the run at it.
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
export LIBTORCH := $(ROOT)/.libtorch
export LD_LIBRARY_PATH := $(ROOT)/.libtorch/lib$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))
# Census-Income and other downloads: the workspace's .cache (installed binaries default to ~/.cache/balance).
export BALANCE_CACHE_DIR ?= $(ROOT)/.cache
# The Python whose pip fetches Census-Income (the venv of scripts/setup-libtorch.sh).
export BALANCE_PYTHON ?= $(ROOT)/.venv/bin/python
CARGO ?= cargo
SHELL := /bin/bash
BENCH_ARGS ?=

.PHONY: setup test bench lint

setup:
	@$(ROOT)/scripts/setup-libtorch.sh
	@$(ROOT)/scripts/setup-gloo.sh

## Run every test (unit, integration, property, doc) of the workspace.
test: setup
	@mkdir -p $(ROOT)/.cache
	set -o pipefail; { $(CARGO) test --workspace --all-targets && $(CARGO) test --workspace --doc; } 2>&1 | tee $(ROOT)/.cache/test.log
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps -q
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' $(ROOT)/.cache/test.log

## Run the benchmark: the default comparison (`make bench BENCH_ARGS="list"` for other subcommands).
bench: setup
	$(CARGO) run --release -q -p balance-bench -- $(BENCH_ARGS)

## Formatting and lints, as CI would want them.
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
