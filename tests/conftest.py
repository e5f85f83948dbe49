"""Shared fixtures: an isolated DIMALIGN_HOME, trained models built once per session, the tiny
settings, the `dimalign` command (in this process, or as a process where its exit code and
output streams are the point), and `drain` for a scheduler ticked by the test."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass
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
    from dimalign.daemon import stop_scheduler

    stop_scheduler()  # a background scheduler some CLI test started
    if old is None:
        os.environ.pop("DIMALIGN_HOME", None)
    else:
        os.environ["DIMALIGN_HOME"] = old


@pytest.fixture(autouse=True)
def keep_main_module():
    """Streamlit's script runner (AppTest) installs each page script as `__main__`; a process
    spawned later by multiprocessing would run that script again. Every test starts and ends
    with pytest's own `__main__`."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


TINY = ["train.epochs=2"]  # the baselines every quick test shares (trained once: tiny_baselines)


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """The tiny settings as overrides (`--set` values); add a method's knobs to them."""
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_cfg():
    return build_config("digits-class", list(TINY))


@pytest.fixture(scope="session")
def tiny_baselines(tiny_cfg):
    """digits-class baselines trained for two epochs: enough for shapes, caching and plumbing."""
    return get_baselines(tiny_cfg)


@pytest.fixture(scope="session")
def default_baselines():
    """The embedded default preset, fully trained once (about 30 s on 2 cores)."""
    return get_baselines(build_config("digits-class"))


@dataclass
class Ran:
    """What one `dimalign` command did, whether run in this process or as its own."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _home(home):
    if home is None:
        yield
        return
    old = os.environ.get("DIMALIGN_HOME")
    os.environ["DIMALIGN_HOME"] = str(home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DIMALIGN_HOME", None)
        else:
            os.environ["DIMALIGN_HOME"] = old


def run_cli(*args: str, home=None) -> Ran:
    """`dimalign ARGS` through `cli.main` in this process: no interpreter start or imports to pay
    for. `home` sets DIMALIGN_HOME for this call only."""
    from dimalign import cli

    out, err = io.StringIO(), io.StringIO()
    with _home(home), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Ran(code, out.getvalue(), err.getvalue())


def run_cli_process(*args: str, home=None, timeout: float = 300, env=None) -> Ran:
    """`python -m dimalign ARGS` as its own process: for tests of the exit-code contract, of
    what reaches the real stdout/stderr, and of a fresh process's caches."""
    env = dict(os.environ if env is None else env)
    if home is not None:
        env["DIMALIGN_HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-m", "dimalign", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def cli_process():
    return run_cli_process


def drain_scheduler(scheduler, done, timeout: float = 120.0) -> None:
    """Tick `scheduler` until `done()` holds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        scheduler.tick()
        if done():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the scheduler")


@pytest.fixture(scope="session")
def drain():
    return drain_scheduler
