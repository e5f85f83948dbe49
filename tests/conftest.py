"""Shared fixtures: an isolated DIMALIGN_HOME and trained models, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# compiled UMAP kernels are kept across sessions as `make` keeps them (every test home would
# otherwise compile them again, about a minute each)
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".dimalign" / "numba-cache"))

from dimalign.config import build_config
from dimalign.train import get_baselines


@pytest.fixture(scope="session", autouse=True)
def dimalign_home(tmp_path_factory):
    """Every test writes under one throw-away home, never into ~/.dimalign."""
    home = tmp_path_factory.mktemp("dimalign-home")
    old = os.environ.get("DIMALIGN_HOME")
    os.environ["DIMALIGN_HOME"] = str(home)
    yield home
    from dimalign.jobs import stop_scheduler

    stop_scheduler()  # a background scheduler some CLI test started
    if old is None:
        os.environ.pop("DIMALIGN_HOME", None)
    else:
        os.environ["DIMALIGN_HOME"] = old


TINY = ["train.epochs=2"]


@pytest.fixture(scope="session")
def tiny_cfg():
    return build_config("digits-class", TINY)


@pytest.fixture(scope="session")
def tiny_baselines(tiny_cfg):
    """digits-class baselines trained for two epochs: enough for shapes, caching and plumbing."""
    return get_baselines(tiny_cfg)


@pytest.fixture(scope="session")
def default_baselines():
    """The embedded default preset, fully trained once (about 30 s on 2 cores)."""
    return get_baselines(build_config("digits-class"))
