# Two commands do everything on a fresh machine:
#   make demo   set up, generate the TwHIN-shaped sample, import, train, evaluate and export it
#   make test   set up, lint and run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/local.yaml

.PHONY: setup demo test lint wordnet bench clean

setup: $(VENV)/.installed

# torch is pinned first so that pip never resolves a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,s3,query]'
	touch $@

# --fresh: the sample was just regenerated and re-imported, so an earlier demo's checkpoints no longer apply
demo: setup
	$(BIN)/tbg synth $(CONFIG) --overwrite
	$(BIN)/tbg import $(CONFIG) --overwrite
	$(BIN)/tbg train $(CONFIG) --fresh
	$(BIN)/tbg eval $(CONFIG)
	$(BIN)/tbg export $(CONFIG) --format tsv --out runs/local/export --overwrite

lint: setup
	$(BIN)/ruff check tbg tests tools
	$(BIN)/ruff format --check tbg tests tools

test: setup lint
	$(BIN)/python -m pytest

wordnet: setup
	$(BIN)/python tools/build_wordnet.py

bench: setup
	$(BIN)/python tools/bench/import_bench.py
	$(BIN)/python tools/bench/train_bench.py
	$(BIN)/python tools/bench/eval_bench.py
	$(BIN)/python tools/bench/export_bench.py

clean:
	rm -rf runs data/twhin_sample
