"""Shared helpers for benchmarks: a header that states the evidence, and medians."""

from __future__ import annotations

import os
import platform
import statistics
import time

import torch


def header(title: str, settings: dict) -> None:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"# {title}")
    print(f"host: {platform.node()}  cpu cores: {os.cpu_count()}  torch threads: "
          f"{torch.get_num_threads()}  gpu: {gpu}  torch {torch.__version__}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def cifar10_arrays(n_train: int | None = None, n_test: int | None = None):
    """CIFAR-10 from $DIMALIGN_HOME/data when it is there; otherwise CIFAR-shaped synthetic
    data (uint8 3x32x32, 10 classes, each a smooth random template plus noise, so a model
    learns something) — timings need the shapes, not the pictures. Returns (arrays, source)."""
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
