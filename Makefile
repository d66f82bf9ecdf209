# gigapulse front door. `make help` lists the targets; the README's two commands are `demo` and `test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.8

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt infra/system-deps.sh
	@bash infra/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip install -q --python $(BIN)/python -c constraints.txt -e '.[dev,bench]'
	$(BIN)/gigapulse broker fetch
	touch $(STAMP)

install: $(STAMP) ## Create .venv, install the pinned dependencies, fetch Kafka's jars

lock: ## Re-resolve constraints.txt from pyproject.toml (then commit it)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra bench -p 3.11 --no-header --annotation-style line -o constraints.txt

demo: $(STAMP) ## The main job end to end on local defaults: broker, simulate, stream, lake, SQL
	$(BIN)/gigapulse demo

test: $(STAMP) ## Run the whole test suite (starts its own Kafka broker on free ports)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

broker-start: $(STAMP) ## Start the local broker on 127.0.0.1:9092 and apply the topic catalog
	$(BIN)/gigapulse broker start

broker-stop: $(STAMP) ## Stop the local broker
	$(BIN)/gigapulse broker stop

bench: $(STAMP) ## Run every benchmark (see docs/BENCHMARKS.md)
	$(BIN)/gigapulse bench ingest
	$(BIN)/gigapulse bench stream
	$(BIN)/gigapulse bench freshness
	$(BIN)/gigapulse bench recovery
	$(BIN)/gigapulse bench warehouse
	$(BIN)/gigapulse bench bridges modbus
	$(BIN)/gigapulse bench bridges opcua
	$(BIN)/gigapulse bench bridges mqtt
	$(BIN)/gigapulse bench quality
	$(BIN)/gigapulse bench scoring

bench-all: $(STAMP) ## Every benchmark, then the figures section of docs/BENCHMARKS.md rewritten (hours)
	$(BIN)/gigapulse bench all

proto: $(STAMP) ## Regenerate ingestion/bridges/sparkplug_b_pb2.py from its .proto (grpcio-tools' protoc)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. ingestion/bridges/sparkplug_b.proto

clean: ## Remove local data (var/), keep the venv and the Kafka cache
	rm -rf var

.PHONY: help install lock demo test lint broker-start broker-stop bench bench-all proto clean
