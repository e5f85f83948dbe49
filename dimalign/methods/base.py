"""What a method is: a registry entry with typed knobs, and the hooks the shared loop calls.

A method supplies only what is its own: its knobs, the phases of an epoch, and the loss of one
step (as named terms, already weighted). Everything else — optimiser, epochs, device, batches,
telemetry, cancellation, NaN detection — belongs to the loop in `loop.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from dimalign.errors import ConfigError
from dimalign.values import from_text


@dataclass(frozen=True)
class Knob:
    type: type  # int, float, bool or str
    default: Any
    help: str
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    low_open: bool = False  # True: the lower bound itself is not allowed
    choices: tuple[str, ...] = ()
    source: str = "choice"  # "paper: <where>" or "choice: <why>"
    # where the knob is shown, e.g. "Loss weights", "Schedule", "Optimiser" (required): a
    # method's groups come in the order its knobs first name them, the first one shown open
    group: str = field(kw_only=True)
    # True: the value counts feature dimensions (0 = not set), so it may not exceed the width of
    # the model's features; the config checks that, since only it knows the model
    feature_count: bool = field(default=False, kw_only=True)

    @property
    def numeric(self) -> bool:
        """A number on a range (not one of a few choices): what a slider or a sweep takes."""
        return self.type in (int, float) and not self.choices

    def parse(self, key: str, text: str) -> Any:
        """A value of this knob's type from text (a `--set` override); `check` still applies."""
        return from_text(key, self.type, text)

    def check(self, key: str, value: Any) -> Any:
        """Coerce and range-check a value; ConfigError names the key and what is allowed.
        The one place a knob's value is checked: configs, presets and the app all come here."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise ConfigError(key, f"expected {self.type.__name__}, got {value!r}")
        if self.choices and value not in self.choices:
            raise ConfigError(key, f"{value!r} is not allowed; choose one of "
                              f"{', '.join(self.choices)}")
        if self.type is float and not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number in {self.range_text()}, got {value}")
        if self.type in (int, float):
            too_low = self.low is not None and (value <= self.low if self.low_open
                                                else value < self.low)
            too_high = self.high is not None and value > self.high
            if too_low or too_high:
                raise ConfigError(key, f"must lie in {self.range_text()}, got {value}")
        return value

    def range_text(self) -> str:
        left = "(" if self.low_open else "["
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{left}{low}, {high}]"


SCHEDULE, OPTIMISER = "Schedule", "Optimiser"  # the groups of the common knobs


def common_knobs(lr: float, epochs: int, batch_size: int = 64, optimizer: str = "sgd",
                 retain_fraction: float = 1.0, source: str = "choice", momentum: float = 0.9,
                 weight_decay: float = 5e-4, augment: bool = False) -> dict[str, Knob]:
    """Knobs every trained method has; defaults differ per method. Epochs come first (group
    "Schedule"), then the "Optimiser" ones: a method lists its own knobs before these.
    `source` (shown on epochs and lr) says where the schedule and optimiser defaults come
    from."""
    return {
        "epochs": Knob(int, epochs, "passes of the method's schedule", 1, 1000, source=source,
                       group=SCHEDULE),
        "lr": Knob(float, lr, "learning rate", 0.0, 10.0, low_open=True, source=source,
                   group=OPTIMISER),
        "batch_size": Knob(int, batch_size, "samples per batch (each of forget and retain)", 2,
                           65536, group=OPTIMISER),
        "optimizer": Knob(str, optimizer, "optimiser", choices=("sgd", "adam"),
                          group=OPTIMISER),
        "momentum": Knob(float, momentum, "SGD momentum (Adam ignores it)", 0.0, 0.999,
                         group=OPTIMISER),
        "weight_decay": Knob(float, weight_decay, "L2 weight decay", 0.0, 1.0,
                             group=OPTIMISER),
        "retain_fraction": Knob(float, retain_fraction, "fraction of D_r the method may use "
                                "(a fixed, seeded subset)", 0.0, 1.0, low_open=True,
                                group=OPTIMISER),
        "augment": Knob(bool, augment, "augment the method's batches as training does (random "
                        "shifts; flips for RGB)", group=OPTIMISER),
    }


VARIANT = "Variant"  # the group of a baseline's `variant` knob


def variant_knob(default: str, why: str, choices: tuple[str, ...] = ("reference", "dimalign")
                 ) -> dict[str, Knob]:
    """A baseline's `variant`: "reference" follows its authors' public code (loop, loss,
    optimiser and defaults); "dimalign" is our loop where we keep one on purpose. `why` says
    which is the default and why (shown by `dimalign methods`)."""
    return {"variant": Knob(str, default, "reference = the authors' public code; dimalign = "
                            "our loop" if len(choices) > 1 else "the authors' public code (our "
                            "loop is the same)", choices=choices, source=why, group=VARIANT)}


@dataclass(frozen=True)
class Phase:
    name: str  # shown in telemetry, e.g. "forget", "recover", "train", "max", "min"
    source: str  # "forget", "retain" or "both" (a forget and a retain batch per step)
    steps: int  # optimiser steps in this phase


@dataclass
class Batch:
    xf: torch.Tensor | None = None  # normalised forget images on the device
    yf: torch.Tensor | None = None
    xr: torch.Tensor | None = None  # normalised retain images
    yr: torch.Tensor | None = None


@dataclass
class Context:
    """What a method sees: the model being unlearned, a frozen original, data sizes, knobs."""

    model: torch.nn.Module  # starts as a copy of the original; trained in place
    teacher: torch.nn.Module  # frozen original (eval mode, no grad)
    params: dict[str, Any]
    num_classes: int
    n_forget: int
    n_retain: int  # retain samples available to the method (after retain_fraction)
    device: torch.device
    generator: torch.Generator  # CPU generator for anything random a method draws
    # a method's own state (masks, banks); the loop keeps "progress" (fraction of the run's
    # steps done) and "epoch" (0-based) in it up to date before every step
    state: dict[str, Any] = field(default_factory=dict)
    draw: Callable[[str], Batch] | None = None  # the loop's batches: "forget", "retain", "both"
    # one ordered pass over a split ("forget" or "retain") in batches of batch_size, without
    # augmentation and without touching the streams (for setups such as SalUn's mask)
    full_pass: Callable[[str], Iterator[Batch]] | None = None
    fresh_model: Callable[[], torch.nn.Module] | None = None  # same architecture, new weights

    def steps_for(self, n: int) -> int:
        return max(1, -(-n // self.params["batch_size"]))


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str
    description: str
    paper: str
    knobs: dict[str, Knob]
    phases: Callable[[Context, int], list[Phase]]  # (ctx, epoch index) -> phases of the epoch
    loss: Callable[[Context, Phase, Batch], dict[str, torch.Tensor]] | None
    setup: Callable[[Context], None] | None = None  # once, before training
    grad_hook: Callable[[Context], None] | None = None  # after backward, before the step
    trains: bool = True  # False for retrain, which the baselines already provide
    # a variant's own defaults where they differ from the knobs' (which are the default
    # variant's): {"reference": {"epochs": 10, ...}}; `resolve` applies the chosen one's
    variant_defaults: dict[str, dict[str, Any]] = field(default_factory=dict, kw_only=True)

    def defaults(self, variant: str | None = None) -> dict[str, Any]:
        """Every knob's default; those of `variant` where it has its own."""
        values = {k: knob.default for k, knob in self.knobs.items()}
        if variant is not None:
            values.update(self.variant_defaults.get(variant, {}), variant=variant)
        return values

    def differences(self, values: dict[str, Any]) -> dict[str, Any]:
        """The entries of `values` (every knob's value, e.g. from the sliders) a config has to
        keep: those that differ from the defaults of the chosen variant, and that variant
        itself unless it is the default one."""
        default_variant = self.knobs["variant"].default if "variant" in self.knobs else None
        defaults = self.defaults(values.get("variant"))
        return {k: v for k, v in values.items()
                if v != defaults[k] or (k == "variant" and v != default_variant)}

    def variant_dependent(self) -> set[str]:
        """The knobs whose default depends on the variant."""
        return {k for values in self.variant_defaults.values() for k in values}

    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, its knobs) in display order: the order the knobs first name their groups.
        The first is the one to show open."""
        out: dict[str, list[str]] = {}
        for key, knob in self.knobs.items():
            out.setdefault(knob.group, []).append(key)
        return list(out.items())

    def knob(self, key: str) -> Knob:
        """The knob named `key`; a ConfigError lists the allowed ones."""
        if key not in self.knobs:
            raise ConfigError(f"{self.name}.{key}" if key else self.name,
                              "unknown knob; allowed knobs are "
                              + ", ".join(f"{self.name}.{k}" for k in self.knobs))
        return self.knobs[key]

    def parse(self, key: str, text: str) -> Any:
        """A knob's value from the text of a `NAME.key=value` override (checked by `check`)."""
        return self.knob(key).parse(f"{self.name}.{key}", text)

    def check(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The overrides, each coerced and checked: what a config keeps for this method."""
        return {key: self.knob(key).check(f"{self.name}.{key}", value)
                for key, value in overrides.items()}

    def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Every knob: the defaults (of the chosen variant) with the overrides applied, each
        checked."""
        checked = self.check(overrides)
        return {**self.defaults(checked.get("variant")), **checked}


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    for key, knob in spec.knobs.items():  # a plugin's defaults obey its own knobs' rules
        if knob.type is str and not knob.choices:
            raise ConfigError(f"{spec.name}.{key}", "a text knob needs its choices")
        knob.check(f"{spec.name}.{key}", knob.default)
    for variant, values in spec.variant_defaults.items():  # a typo here is a bug, found early
        spec.knob("variant").check(f"{spec.name}.variant", variant)
        spec.check(values)
    REGISTRY[spec.name] = spec
    return spec
