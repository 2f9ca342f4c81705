# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv itself.
# TORCH pins the CPU wheel available here; users with GPUs override it: `make demo TORCH=torch`.
PY     ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check
# uv installs everything but torch: the same packages as pip in a third of the time (48 s vs 142 s for
# [dev] here, docs/LOG.md 2026-11-30); torch itself goes through pip, which finds the local CPU wheel
# (uv does not look there), and uv keeps the torch it finds.
UV     := $(BIN)/uv pip install -q --python $(BIN)/python
OUT    ?= runs/demo

.PHONY: demo demo-gpu test test-all lint docs bench gpu-check gpu-wheels install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(PIP) "$(TORCH)" uv
	$(UV) -e ".[all]"
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(UV) -e ".[dev]"
	touch $@

# Ray only serves slow tests (the Ray executor): `make test` does not install it
$(VENV)/.dev-all: $(VENV)/.dev
	$(UV) -e ".[dev,ray]"
	touch $@

install: $(VENV)/.base

demo: $(VENV)/.base
	$(BIN)/scalelab demo --out $(OUT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .

# the documentation site, warnings as errors (a broken link, page or reference fails): site/ (git-ignored)
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# numpy/scipy's OpenBLAS pool only spins on the fits' small arrays (docs/LOG.md 2026-11-30); torch uses MKL.
# Tests start ~100 `scalelab` processes: where the environment sets PYTHONDONTWRITEBYTECODE, each would
# compile scalelab's modules again, so the tests let Python cache them (__pycache__ is git-ignored).
TEST_ENV := env -u PYTHONDONTWRITEBYTECODE OPENBLAS_NUM_THREADS=1
test: lint docs
	$(TEST_ENV) $(BIN)/python -m pytest -q -m "not slow"

test-all: lint docs $(VENV)/.dev-all
	$(TEST_ENV) $(BIN)/python -m pytest -q

bench: $(VENV)/.dev
	$(BIN)/python bench/throughput.py --json bench/results/throughput.json

# The CUDA path on a GPU machine (bench/gpu_check.py): without a GPU it says so and exits 0. It runs
# under this project's .venv when there is one, else under the machine's own python3 and PyTorch
# (a GPU image with no package registry: src/ goes on PYTHONPATH, plotly travels as a wheel).
GPU_PY := $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PY) bench/gpu_check.py --json bench/results/gpu_check.json

# The GPU demo (#41): a ladder, its fit and a held-out run at 4x on one CUDA device (without one, its toy twin).
demo-gpu:
	PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PY) -m scalelab.cli demo --gpu --out runs/demo-gpu

# Wheels for a GPU machine without a registry (CPython 3.12, x86-64): what its image lacks.
gpu-wheels:
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  --platform any -d .whl plotly==7.1.0

clean:
	rm -rf $(VENV) runs .pytest_cache
