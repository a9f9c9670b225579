# harness: run `make help` for the targets.
PY        ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
EXPERIMENT ?= fig2_decay
ARGS      ?=
# Fashion-MNIST for the demo: DATA=dir, else what the harness finds itself ($HARNESS_DATA,
# ./data, Debian's /usr/share/datasets/fashion-mnist from dataset-fashion-mnist), else a download.
DATA      ?=
DATA_ARG  := $(if $(DATA),dataset.root=$(DATA))

.DEFAULT_GOAL := help
.PHONY: help install test test-fast test-torch211 lint demo sweep sweep-plan report bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: ## create .venv with the project (editable) and its dev + slurm extras
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,slurm]'

# Every target that runs the harness creates the environment first when it is missing.
$(BIN)/harness: pyproject.toml
	$(MAKE) install
	touch $@

test: $(BIN)/harness ## run every test, slow ones included (CPU, about 15 minutes on 2 cores)
	$(BIN)/python -m pytest -q --durations=20  # the 20 slowest: where the 15 minutes go

test-fast: $(BIN)/harness ## run the tests not marked slow
	$(BIN)/python -m pytest -q -m 'not slow'

# The device runs torch 2.11: its compile tests run here in a side venv that holds only torch
# 2.11 (PyPI's wheel, --no-deps; for Linux x86_64 PyPI has only the CUDA 13 build, which runs on
# a CPU) and sees everything else, the CUDA libraries included, through a .pth file naming
# $(VENV)'s site-packages, after its own: one 530 MB download, no second copy of the rest.
SIDE      ?= .venv-torch211
SIDE_TORCH ?= 2.11.0
COMPILE_TESTS ?= tests/train/test_compiled.py tests/train/test_step.py
test-torch211: $(BIN)/harness ## the compile tests under torch 2.11, the device's (side venv $(SIDE))
	test -x $(SIDE)/bin/python || $(BIN)/python -m venv $(SIDE)  # the same Python as $(VENV)
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
		> "$$($(SIDE)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_project_venv.pth"
	$(SIDE)/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "$(SIDE_TORCH)")' \
		2>/dev/null || $(SIDE)/bin/pip install -q --no-deps 'torch==$(SIDE_TORCH)'
	PYTHONPATH=src $(SIDE)/bin/python -c 'import torch; print("torch", torch.__version__, torch.__file__)'
	PYTHONPATH=src $(SIDE)/bin/python -m pytest -q $(COMPILE_TESTS)

lint: $(BIN)/harness ## ruff over src and tests
	$(BIN)/python -m ruff check src tests

clean: ## remove caches (never results/)
	rm -rf .pytest_cache build src/*.egg-info outputs multirun

sweep: $(BIN)/harness ## run a study's grid, resuming where it stopped (EXPERIMENT=fig2_decay ARGS=overrides)
	$(BIN)/python -m harness run -m +experiment=$(EXPERIMENT) $(ARGS)

sweep-plan: $(BIN)/harness ## dry run: cells, cells done, images to train, data missing; needs no data, writes nothing (EXPERIMENT=...)
	$(BIN)/python -m harness run -m +experiment=$(EXPERIMENT) run.plan=true $(ARGS)

report: $(BIN)/harness ## figures + report.md of a study from its parquet files (EXPERIMENT=...)
	$(BIN)/python -m harness report $(EXPERIMENT)

demo: $(BIN)/harness ## the main job on a CPU: the demo study on real Fashion-MNIST, then its report
	$(BIN)/python -m harness run -m +experiment=demo $(DATA_ARG) $(ARGS)
	$(BIN)/python -m harness report demo

bench: $(BIN)/harness ## training throughput: naive loop vs harness vs packed cells (writes results/bench/)
	$(BIN)/python -m harness bench $(ARGS)
