# cloudplow: `make run` (demo when there is no config.yaml) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
		(apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null)
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	@if [ -f config.yaml ] || [ -n "$$CLOUDPLOW_CONFIG" ]; then \
		exec $(BIN)/cloudplow run; \
	else \
		exec $(BIN)/python -m cloudplow.demo; \
	fi

lint: install
	$(BIN)/ruff check cloudplow tests bench
	$(BIN)/ruff format --check cloudplow tests bench
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo
