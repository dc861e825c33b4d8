# Switchboard: two commands to get going.
#   make run    set up the machine (services, pgvector, database), then serve
#   make test   set up the machine, then run the whole test suite
#   make bench  set up the machine, then run the standard benchmarks (scripts/bench.sh)
#               and rewrite docs/BENCHMARKS.md
# HOST / PORT / APP_ENV and the app's other settings pass through from the environment.
# make test TEST_ARGS=name  runs only matching tests; RUST_TEST_THREADS=N (default 4).

SHELL := /bin/bash
CARGO ?= cargo
RUST_TEST_THREADS ?= 4

# rustup installs into ~/.cargo/bin, which a non-login shell may not have on PATH
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup run test bench check fmt migrate validate-config

setup:
	bash scripts/setup.sh

run: export APP_ENV ?= development
run: setup
	@echo "Switchboard on http://$${HOST:-127.0.0.1}:$${PORT:-8080} (APP_ENV=$$APP_ENV)"
	$(CARGO) run --bin switchboard -- serve

test: export APP_ENV := test
test: export RUST_TEST_THREADS := $(RUST_TEST_THREADS)
test: setup
	$(CARGO) test $(TEST_ARGS)

# Release build, server on 127.0.0.1:18080 with raised plan limits, loopback traffic only.
bench: setup
	bash scripts/bench.sh

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

migrate:
	$(CARGO) run --bin switchboard -- migrate

validate-config:
	$(CARGO) run --bin switchboard -- validate-config
