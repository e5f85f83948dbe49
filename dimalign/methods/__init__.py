"""The method registry: MUDA and the baselines, each with a name, a description, its paper and
typed knobs. Pages and the CLI build pickers and sliders from `REGISTRY`.

Outside packages add methods through the entry-point group `dimalign.methods`: each entry point
names a module (importing it calls `register(...)`) or a `MethodSpec` (registered here). They
load once, at import of this package and after the built-in methods. `ORDER`, the order every
picker and table lists methods in, is the order they registered: the built-ins as their modules
register them, then the plugins. Every module of this package other than the shared machinery
(`base`, `loop`, `losses`, `run_state`, `telemetry`) is a built-in method module and is
imported here in name order (`baselines`, then `muda`): a new method is one new file. A plugin
that fails to load, or whose name clashes with a method already registered, is skipped with
one warning.
"""

import importlib
import pkgutil
import types
import warnings
from importlib.metadata import entry_points

from dimalign.errors import ConfigError
from dimalign.methods.base import REGISTRY, Knob, MethodSpec, register

MACHINERY = ("base", "loop", "losses", "run_state", "telemetry")  # not method modules
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in MACHINERY:
        importlib.import_module(f"{__name__}.{_module}")  # registers its methods

ENTRY_POINT_GROUP = "dimalign.methods"
BUILTIN = tuple(REGISTRY)  # the built-in methods, in the order they registered
ORDER = BUILTIN  # the plugins join below


class PluginWarning(UserWarning):
    """A plugin method was skipped: it failed to load, or its name is already taken."""


def get_method(name: str) -> MethodSpec:
    if name not in REGISTRY:
        raise ConfigError("--method", f"unknown method {name!r}; choose one of "
                          f"{', '.join(ORDER)}")
    return REGISTRY[name]


def _load_plugin(ep) -> None:
    """Load one entry point into REGISTRY; on any failure leave REGISTRY as it was and warn."""
    before = dict(REGISTRY)
    where = f"plugin method {ep.name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP!r})"
    try:
        obj = ep.load()
        if isinstance(obj, MethodSpec):
            if before.get(obj.name) is not obj and obj.name in before:
                raise NameError(f"method name {obj.name!r} is already registered")
            if REGISTRY.get(obj.name) is not obj:  # a module may have registered it already
                register(obj)
        elif not isinstance(obj, types.ModuleType):
            raise TypeError(f"{ep.value} is {type(obj).__name__}, neither a module nor a "
                            "MethodSpec")
        taken = [n for n in before if REGISTRY.get(n) is not before[n]]
        if taken:
            raise NameError(f"method name {', '.join(map(repr, taken))} is already registered")
        for name, spec in REGISTRY.items():
            if not isinstance(spec, MethodSpec) or spec.name != name:
                raise TypeError(f"registered {name!r} is not a MethodSpec named {name!r}")
    except Exception as exc:  # noqa: BLE001 — a broken plugin must never break dimalign
        REGISTRY.clear()
        REGISTRY.update(before)
        warnings.warn(f"skipped {where}: {type(exc).__name__}: {exc}", PluginWarning,
                      stacklevel=2)


def _load_plugins() -> tuple[str, ...]:
    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # noqa: BLE001 — unreadable package metadata
        warnings.warn(f"could not list entry points {ENTRY_POINT_GROUP!r}: {exc}",
                      PluginWarning, stacklevel=2)
        eps = ()
    for ep in sorted(eps, key=lambda e: e.name):  # a stable order whatever sys.path holds
        _load_plugin(ep)
    return tuple(REGISTRY)  # registration order: the built-ins, then the plugins


ORDER = _load_plugins()

__all__ = ["REGISTRY", "ORDER", "BUILTIN", "Knob", "MethodSpec", "PluginWarning", "get_method",
           "register"]
