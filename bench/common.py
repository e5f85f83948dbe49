"""What every benchmark shares: its parser with the common options, a header that states the
evidence (machine, versions, commit, settings), timing helpers, CIFAR-shaped data, and the
Chromium of the browser tests."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND: str | None = None  # `python -m bench NAME ...` as run, set by bench/__main__.py


def parser(module: str, *, runs: int | None = None, rounds: int | None = None,
           preset: str | None = None, home: bool = False) -> argparse.ArgumentParser:
    """The parser of benchmark `module` (its __name__): `python -m bench NAME`, its docstring
    as help, and the options benchmarks share, each only where a default is given: --runs
    (timed repeats), --rounds (browser rounds), --preset, --home (an existing DIMALIGN_HOME)."""
    name = module.rsplit(".", 1)[-1]
    out = argparse.ArgumentParser(prog=f"python -m bench {name}",
                                  description=sys.modules[module].__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    if runs is not None:
        out.add_argument("--runs", type=int, default=runs,
                         help=f"timed repeats; the figures are medians (default {runs})")
    if rounds is not None:
        out.add_argument("--rounds", type=int, default=rounds,
                         help=f"measured rounds after a warm-up round (default {rounds})")
    if preset is not None:
        out.add_argument("--preset", default=preset, help=f"preset (default {preset})")
    if home:
        out.add_argument("--home", help="an existing DIMALIGN_HOME to use (kept afterwards); "
                                         "default: a throw-away one")
    return out


def commit() -> str:
    """The checkout's commit, "+ changes" when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode:
            return "unknown (no git checkout)"
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    return head.stdout.strip() + (" + changes" if dirty else "")


def header(title: str, settings: dict) -> None:
    """The title, the machine facts (date, commit, host, cores, Python, torch and its threads,
    GPU) and the settings, as every benchmark prints them first."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {title}")
    print(f"date: {now}  commit: {commit()}" + (f"  command: {COMMAND}" if COMMAND else ""))
    print(f"host: {platform.node()}  cpu cores: {os.cpu_count()}  python "
          f"{platform.python_version()}  torch {torch.__version__}  torch threads: "
          f"{torch.get_num_threads()}  gpu: {gpu}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)


def timed(fn) -> float:
    import torch

    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def chromium() -> str:
    """The Chromium the browser tests drive, from tests/find_browser.py run as a program (one
    implementation: like `make test`, it installs one when none is found); exits when none."""
    finder = ROOT / "tests" / "find_browser.py"
    done = subprocess.run([sys.executable, str(finder)], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT)  # its stderr (what it installs, or why not) shows as is
    prefix = "browser tests: "
    found = [line[len(prefix):].strip() for line in done.stdout.splitlines()
             if line.startswith(prefix)]
    if done.returncode or not found:
        raise SystemExit(f"{finder.relative_to(ROOT)} found no Chromium (exit "
                         f"{done.returncode}){': ' + done.stdout.strip() if done.stdout else ''}")
    return found[-1]


def cifar10_arrays(n_train: int | None = None, n_test: int | None = None):
    """CIFAR-10 from $DIMALIGN_HOME/data when it is there; otherwise CIFAR-shaped synthetic
    data (uint8 3x32x32, 10 classes, each a smooth random template plus noise, so a model
    learns something) — timings need the shapes, not the pictures. Returns (arrays, source)."""
    import torch

    from dimalign.datasets import DATASETS, DatasetUnavailable

    os.environ.setdefault("DIMALIGN_OFFLINE", "1")
    try:
        x_tr, y_tr, x_te, y_te = DATASETS["cifar10"].load(0)
        source = "CIFAR-10"
    except DatasetUnavailable:
        gen = torch.Generator().manual_seed(0)
        templates = torch.nn.functional.interpolate(torch.rand(10, 3, 4, 4, generator=gen),
                                                    size=32, mode="bilinear")

        def make(n):
            y = torch.arange(n) % 10
            noise = torch.rand(n, 3, 32, 32, generator=gen) * 0.5
            return ((templates[y] * 0.5 + noise) * 255).to(torch.uint8), y

        (x_tr, y_tr), (x_te, y_te) = make(n_train or 50000), make(n_test or 10000)
        source = "synthetic CIFAR-shaped (CIFAR-10 is not on this machine)"
    return (x_tr[:n_train], y_tr[:n_train], x_te[:n_test], y_te[:n_test]), source


def use_arrays(dataset: str, arrays) -> None:
    """Make dimalign's experiments of `dataset` use these arrays (in this process)."""
    import dimalign.data as data

    real = data.load_arrays

    def load(name, seed):
        return arrays if name == dataset else real(name, seed)

    data.load_arrays = load
