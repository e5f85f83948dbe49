# The two commands: `make app` runs the dashboard on the embedded default, `make test` runs the
# whole suite. Each creates .venv and installs the project when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(HOME)/.dimalign/numba-cache

.PHONY: app test test-gpu lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev,ray]'
	$(BIN)/dimalign warm  # UMAP's one-time numba compile, here rather than at the first manifold
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/streamlit run app.py --server.headless true

test: $(STAMP)
	$(BIN)/python -m pytest

# On a machine with CUDA; not part of `make test`. GPU_PY=python3 uses an interpreter that already
# has torch with CUDA and the project's needs (an offline GPU image) instead of .venv.
GPU_PY ?=
test-gpu: $(if $(GPU_PY),,$(STAMP))
	$(or $(GPU_PY),$(BIN)/python) -m pytest tests_gpu

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/train_cpu.py

clean-venv:
	rm -rf $(VENV)
