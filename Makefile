# Everything a fresh machine needs: `make demo` and `make test` create .venv, install, and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HAYSTACK_TELEMETRY_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is pinned first so that no dependency pulls a multi-GB CUDA build.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,demo]"
	touch $@

install: $(VENV)/.installed-dev

DEMO_ARGS ?=
demo: install  # e.g. make demo DEMO_ARGS="--seed 7 --verbose"
	$(BIN)/haystack-distill demo $(DEMO_ARGS)

test: install  # everything (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: install  # the edit loop: unit tests, no notebooks, no subprocess training, on every core
	$(BIN)/python -m pytest -q -m "not slow" -n auto

lint: install
	$(BIN)/ruff check haystack_distill augment tests benchmarks
	$(BIN)/mypy  # haystack_distill and augment (pyproject.toml [tool.mypy])

clean:
	rm -rf $(VENV)
