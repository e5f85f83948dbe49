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
