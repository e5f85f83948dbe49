# The two commands: `make app` runs the dashboard on the embedded default (PORT=, ADDRESS= to serve
# elsewhere), `make test` runs the whole suite. Each creates .venv and installs the project when it
# is missing. `make dev` is `make app` that reruns on edits. DIMALIGN_BACKEND=ray
# DIMALIGN_RAY_ADDRESS=auto make app runs every job on a Ray cluster (docs/operations.md: Beyond one machine).
#
# .venv installs exactly requirements.lock (pinned, hashed): a fresh machine gets the versions the
# suite passed with. `make lock` re-resolves it from pyproject.toml's ranges; `make test-latest`
# runs the browser and page tests in .venv-latest, on the newest versions those ranges allow.
PYTHON ?= python3
VENV ?= .venv
LATEST ?=
BEYOND ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# the releases this machine's pip is capped at (PyTorch's CUDA wheels on its disk), where it has any
PIP_CAP := $(wildcard /etc/xdg/pip/constraints.txt)
export NUMBA_CACHE_DIR ?= $(HOME)/.dimalign/numba-cache
PORT ?= 8501
ADDRESS ?= 127.0.0.1
SERVE = $(BIN)/streamlit run app.py --server.headless true --server.address $(ADDRESS) \
	--server.port $(PORT)

.PHONY: app dev test test-latest test-ui lock test-gpu lint bench clean-venv

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(LATEST),1)
	$(BIN)/python -m pip install --upgrade --upgrade-strategy eager -e '.[dev,ray]'
ifeq ($(BEYOND),1)
	$(BIN)/python -m pip install --upgrade streamlit plotly 'ray[tune]'  # past pyproject's bounds
endif
else
	$(BIN)/python -m pip install --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --no-deps -e .
endif
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

# The UI's tests on the newest versions pyproject.toml allows, in their own venv (the `make app`
# the browser tests start inherits VENV and LATEST): run it whenever the UI changes, so the next
# upstream break shows here before a fresh install meets it.
# BEYOND=1: streamlit, plotly and ray past pyproject's upper bounds too (their next releases,
# before a bound moves).
test-latest:
	rm -f .venv-latest/.installed
	$(MAKE) VENV=.venv-latest LATEST=1 BEYOND=$(BEYOND) .venv-latest/.installed
	$(MAKE) VENV=.venv-latest LATEST=1 BEYOND=$(BEYOND) test-ui

test-ui: $(STAMP)
	$(BIN)/python tests/find_browser.py
	$(BIN)/python -m pip list --format=freeze | grep -i -E '^(streamlit|plotly|ray|torch)=='
	$(BIN)/python -m pytest tests/test_e2e.py tests/test_pages.py tests/test_deeplink.py

# requirements.lock from pyproject.toml's ranges, newest allowed, every file's hash; a tool venv of
# its own, so pip-tools never lands in the app's.
lock:
	test -x .venv-lock/bin/python || $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q pip-tools==7.7.0
	.venv-lock/bin/pip-compile --upgrade --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --extra dev --extra ray \
	  $(if $(PIP_CAP),-c $(PIP_CAP)) -o $(LOCK) pyproject.toml

# On a machine with CUDA; not part of `make test`. GPU_PY=python3 uses an interpreter that already
# has torch with CUDA and the project's needs (an offline GPU image) instead of .venv.
GPU_PY ?=
test-gpu: $(if $(GPU_PY),,$(STAMP))
	$(or $(GPU_PY),$(BIN)/python) -m pytest tests_gpu

lint: $(STAMP)
	$(BIN)/ruff check .

# make bench NAME=metrics ARGS="--runs 3": python -m bench NAME ARGS (python -m bench lists them)
bench: NAME = train_cpu
bench: ARGS =
bench: $(STAMP)
	$(BIN)/python -m bench $(NAME) $(ARGS)

clean-venv:
	rm -rf $(VENV)
