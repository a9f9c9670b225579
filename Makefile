# harness: run `make help` for the targets.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
EXPERIMENT ?= fig2_decay
ARGS      ?=
# Fashion-MNIST for the demo: DATA=dir, else a copy beside the checkout or Debian's package
# (dataset-fashion-mnist); with none, the demo downloads it.
DATA      ?= $(firstword $(wildcard ../shared/datasets/fashion-mnist /usr/share/datasets/fashion-mnist))
DATA_ARG  := $(if $(DATA),dataset.root=$(DATA))

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint demo sweep sweep-plan report bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## create .venv with the project (editable) and its dev + slurm extras
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,slurm]'

test: ## run every test, slow ones included (CPU, about 15 minutes on 2 cores)
	$(BIN)/python -m pytest -q

test-fast: ## run the tests not marked slow
	$(BIN)/python -m pytest -q -m 'not slow'

lint: ## ruff over src and tests
	$(BIN)/python -m ruff check src tests

clean: ## remove caches (never results/)
	rm -rf .pytest_cache build src/*.egg-info outputs multirun

sweep: ## run a study's grid, resuming where it stopped (EXPERIMENT=fig2_decay ARGS=overrides)
	$(BIN)/python -m harness run -m +experiment=$(EXPERIMENT) $(ARGS)

sweep-plan: ## dry run: cells, cells done, images to train (EXPERIMENT=...)
	$(BIN)/python -m harness run -m +experiment=$(EXPERIMENT) run.plan=true $(ARGS)

report: ## figures + report.md of a study from its parquet files (EXPERIMENT=...)
	$(BIN)/python -m harness report $(EXPERIMENT)

demo: ## the main job on a CPU: the demo study on real Fashion-MNIST, then its report
	$(BIN)/python -m harness run -m +experiment=demo $(DATA_ARG) $(ARGS)
	$(BIN)/python -m harness report demo

bench: ## training throughput: naive loop vs harness vs packed cells (writes results/bench/)
	$(BIN)/python -m harness bench $(ARGS)
