# The two commands of the quick start. Both work on a machine with nothing but Python.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
OUT    ?= emae-demo

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# torch is installed first and pinned, so pip never resolves a newer (CUDA-sized) build.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/emae demo --out $(OUT) --overwrite

test: $(VENV)/.installed
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
