# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
# TORCH pins the CPU wheel available here; users with GPUs override it: `make demo TORCH=torch`.
PY     ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check
OUT    ?= runs/demo

.PHONY: demo test test-all lint bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(PIP) "$(TORCH)"
	$(PIP) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) -e ".[dev]"
	touch $@

install: $(VENV)/.base

demo: $(VENV)/.base
	$(BIN)/scalelab demo --out $(OUT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

test-all: lint
	$(BIN)/python -m pytest -q

bench: $(VENV)/.dev
	$(BIN)/python bench/throughput.py --json bench/results/throughput.json

clean:
	rm -rf $(VENV) runs .pytest_cache
