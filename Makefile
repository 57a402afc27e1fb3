# Two commands matter: `make demo` and `make test`. Both work on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned first: an unpinned torch pulls several GB of CUDA wheels.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,plots,eval,vision]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m mergekit_fw.cli.demo

test: install
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf .demo demo_out build dist
