# The two commands: `make app` runs the dashboard on the embedded default (PORT=, ADDRESS= to serve
# elsewhere), `make test` runs the whole suite. Each creates .venv and installs the project when it
# is missing. `make dev` is `make app` that reruns on edits. DIMALIGN_BACKEND=ray
# DIMALIGN_RAY_ADDRESS=auto make app runs every job on a Ray cluster (README: Beyond one machine).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(HOME)/.dimalign/numba-cache
PORT ?= 8501
ADDRESS ?= 127.0.0.1
SERVE = $(BIN)/streamlit run app.py --server.headless true --server.address $(ADDRESS) \
	--server.port $(PORT)

.PHONY: app dev test test-gpu lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev,ray]'
	$(BIN)/dimalign warm  # UMAP's one-time numba compile, here rather than at the first manifold
	touch $(STAMP)

app: $(STAMP)  # no file watcher: .streamlit/config.toml
	$(SERVE)

# Reruns on edits to app.py, pages/ and dimalign/: Streamlit watches the app's pages and the modules
# it imports from here (.venv and other dot folders, site-packages: never). Polling those files, not
# watchdog: watchdog would watch app.py's folder recursively, .venv and everything in it included.
dev: $(STAMP)
	$(SERVE) --server.fileWatcherType poll --server.runOnSave true \
	  $(foreach d,tests tests_gpu bench assets,--server.folderWatchBlacklist '$(CURDIR)/$(d)')

test: $(STAMP)
	$(BIN)/python tests/find_browser.py  # the browser tests' Chromium, installed if missing
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
