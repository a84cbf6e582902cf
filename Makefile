# The two commands the README starts with: `make run` and `make test`. Each does its own setup.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: setup run test lint check bench down clean

setup:
	@bash scripts/setup.sh

run: setup
	$(BIN)/amtp-obs up
	$(BIN)/amtp-obs demo --calls 6 --duration 15
	$(BIN)/amtp-obs verify
	@$(BIN)/amtp-obs status --urls
	@echo "==> the stack keeps running: logs in .amtp-obs/logs/, stop it with 'make down' (docs/embedded.md)"

# The SDK's public packages are type-checked strictly (issue 12); the rest of the tree is linted.
TYPED := -p amtp_obs.sdk -p amtp_obs.instrument -p amtp_obs.contract

test: setup
	$(BIN)/ruff check src tests bench apps
	$(BIN)/mypy --strict $(TYPED)
	$(PY) -m pytest

lint: setup
	$(BIN)/ruff check src tests bench apps
	$(BIN)/mypy --strict $(TYPED)

check: setup
	$(BIN)/amtp-obs check

bench: setup
	$(PY) bench/run.py

down:
	$(BIN)/amtp-obs down

clean: down
	rm -rf .amtp-obs
