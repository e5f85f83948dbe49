"""An unlearning run's whole state, as one object that saves and loads itself.

Saving after an epoch and loading into a freshly prepared run continues it bit for bit: the
weights, the optimiser, every random number generator, where each batch stream stands, the
step and epoch, the clocks, and the method's own state (`Context.state`: SalUn's mask, MUDA's
retain bank, ...). The saved dict holds tensors, numbers, strings and containers of them only,
so `torch.load(..., weights_only=True)` reads it back.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from dimalign.data import augment, normalise
from dimalign.datasets import DatasetInfo

FORMAT = 2  # version 1 (before method state was saved) cannot resume exactly: refused


class Stream:
    """Endless shuffled batches of one split, kept on the device as uint8 (augmented as in
    training when `augment`)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, info: DatasetInfo,
                 device: torch.device, generator: torch.Generator, channels_last: bool,
                 augment: bool = False):
        self.x, self.y = x.to(device), y.to(device)
        self.bs, self.info, self.gen = min(batch_size, len(y)), info, generator
        self.channels_last, self.augment = channels_last, augment
        self.order: torch.Tensor | None = None  # this pass's permutation of the rows
        self.pos = len(y)  # rows of `order` already used: a new pass starts at the next draw

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.bs > len(self.y):
            self.order = torch.randperm(len(self.y), generator=self.gen).to(self.x.device)
            self.pos = 0
        idx = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        x = self.x[idx]
        if self.augment:  # the same batched, seeded augmentation training uses
            x = augment(x, self.info, self.gen)
        x = normalise(x, self.info)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.y[idx]

    def state_dict(self) -> dict:
        return {"order": self.order, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        order = state["order"]
        self.order = None if order is None else order.to(self.x.device)
        self.pos = state["pos"]


def pack(value: Any, where: str) -> Any:
    """A method-state value as plain, loadable data: a module becomes its weights."""
    if isinstance(value, torch.nn.Module):
        return {"__module__": {k: v.detach().clone() for k, v in value.state_dict().items()}}
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: pack(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(pack(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"method state {where} is a {type(value).__name__}; a method may keep "
                    "tensors, numbers, strings, modules and dicts or lists of them in ctx.state, "
                    "so that a run can be checkpointed and resumed")


def unpack(saved: Any, current: Any, device: torch.device) -> Any:
    """The inverse of `pack`; a module is loaded into the one `setup` made again (`current`)."""
    if isinstance(saved, dict) and set(saved) == {"__module__"}:
        if not isinstance(current, torch.nn.Module):
            raise ValueError("a checkpoint holds a module the method's setup did not make")
        current.load_state_dict(saved["__module__"])
        return current
    if isinstance(saved, torch.Tensor):
        return saved.to(device)
    if isinstance(saved, dict):
        here = current if isinstance(current, dict) else {}
        return {k: unpack(v, here.get(k), device) for k, v in saved.items()}
    if isinstance(saved, list | tuple):
        return type(saved)(unpack(v, None, device) for v in saved)
    return saved


class RunState:
    """model, optimiser, generators, batch streams, step/epoch, clocks and method state."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, streams: dict[str, Stream],
                 method_state: dict[str, Any], device: torch.device):
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.streams, self.method_state, self.device = streams, method_state, device
        self.step = 0  # optimiser steps taken
        self.epoch = 0  # epochs completed
        self.seconds = 0.0  # of the method, telemetry included, before this process took over
        self.telemetry_seconds = 0.0

    def state_dict(self) -> dict:
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": FORMAT, "epoch": self.epoch, "step": self.step,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()), "rng": rng,
            "streams": {name: s.state_dict() for name, s in self.streams.items()},
            "method": {k: pack(v, f"ctx.state[{k!r}]") for k, v in self.method_state.items()},
            "seconds": self.seconds, "telemetry_seconds": self.telemetry_seconds,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != FORMAT:
            raise ValueError("this checkpoint was written by an older dimalign that did not save "
                             "the method's state; it cannot be resumed exactly, start the run "
                             "again")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name])
        restored = {k: unpack(v, self.method_state.get(k), self.device)
                    for k, v in state["method"].items()}
        self.method_state.clear()
        self.method_state.update(restored)
        self.step, self.epoch = state["step"], state["epoch"]
        self.seconds, self.telemetry_seconds = state["seconds"], state["telemetry_seconds"]
