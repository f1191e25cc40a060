# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint bench clean data

FASHION_MNIST := /usr/share/datasets/fashion-mnist

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

# Real benchmark data from the distribution's archive (not needed by demo or test; the tests
# that read the real files skip without them)
data:
	@if [ -d "$(FASHION_MNIST)" ]; then \
		echo "Fashion-MNIST is installed in $(FASHION_MNIST)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST is not installed and this user cannot install packages: run"; \
		echo "  sudo apt-get install dataset-fashion-mnist"; \
		echo "or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz"; \
		echo "and t10k-labels-idx1-ubyte.gz in a folder and pass --data fashion-mnist:<folder>"; \
	fi

bench: $(STAMP) data
	$(BIN)/python benchmarks/forget.py
	$(BIN)/python benchmarks/sparse.py
	$(BIN)/python benchmarks/skills.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/loop.py
	$(BIN)/python benchmarks/continual.py
	$(BIN)/python benchmarks/local.py
	$(BIN)/python benchmarks/adapt.py
	$(BIN)/python benchmarks/threads.py
	$(BIN)/python benchmarks/distributed.py
	$(BIN)/python benchmarks/cost.py

clean:
	rm -rf $(VENV) runs .pytest_cache
