# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned, so pip never resolves a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[dev,hf]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/neuroplastic forget --forget-class 8 --compare ssd

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/forget.py
	$(BIN)/python benchmarks/sparse.py
	$(BIN)/python benchmarks/skills.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/loop.py
	$(BIN)/python benchmarks/continual.py
	$(BIN)/python benchmarks/local.py
	$(BIN)/python benchmarks/adapt.py

clean:
	rm -rf $(VENV) runs .pytest_cache
