"""The method registry: MUDA and the baselines, each with a name, a description, its paper and
typed knobs. Pages and the CLI build pickers and sliders from `REGISTRY`.

Outside packages add methods through the entry-point group `dimalign.methods`: each entry point
names a module (importing it calls `register(...)`) or a `MethodSpec` (registered here). They
load once, on first need, after the built-in methods: `load_plugins()` loads them, and
`get_method`, `ORDER` and `REGISTRY` call it, so a command that needs no method (`--help`,
`runs`) never waits for a slow plugin. `ORDER`, the order every
picker and table lists methods in, is the order they registered: the built-ins as their modules
register them, then the plugins. Every module of this package other than the shared machinery
(`base`, `loop`, `losses`, `run_state`, `telemetry`) is a built-in method module and is
imported here in name order (`baselines`, then `muda`): a new method is one new file. A plugin
that fails to load (even by calling `sys.exit`), or whose name clashes with a method already
registered, is skipped with one warning; what a plugin prints goes to stderr, since stdout
holds `--json`'s one object.
"""

import contextlib
import importlib
import pkgutil
import sys
import threading
import time
import types
import warnings
from importlib.metadata import entry_points

from dimalign.errors import ConfigError
from dimalign.methods.base import REGISTRY as _REGISTRY  # REGISTRY: through __getattr__ below
from dimalign.methods.base import Knob, MethodSpec, register

MACHINERY = ("base", "loop", "losses", "run_state", "telemetry")  # not method modules
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in MACHINERY:
        importlib.import_module(f"{__name__}.{_module}")  # registers its methods

ENTRY_POINT_GROUP = "dimalign.methods"
BUILTIN = tuple(_REGISTRY)  # the built-in methods, in the order they registered
SLOW_IMPORT_SECONDS = 2.0  # a plugin slower to import is named on stderr


class PluginWarning(UserWarning):
    """A plugin method was skipped: it failed to load, or its name is already taken."""


def get_method(name: str) -> MethodSpec:
    order = load_plugins()
    if name not in _REGISTRY:
        raise ConfigError("--method", f"unknown method {name!r}; choose one of "
                          f"{', '.join(order)}")
    return _REGISTRY[name]


def _load_plugin(ep) -> None:
    """Load one entry point into REGISTRY; on any failure leave REGISTRY as it was and warn."""
    before = dict(_REGISTRY)
    where = f"plugin method {ep.name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP!r})"
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            obj = ep.load()
        if (seconds := time.perf_counter() - start) > SLOW_IMPORT_SECONDS:
            print(f"dimalign: plugin method {ep.name!r} took {seconds:.1f} s to import",
                  file=sys.stderr)
        if isinstance(obj, MethodSpec):
            if before.get(obj.name) is not obj and obj.name in before:
                raise NameError(f"method name {obj.name!r} is already registered")
            if _REGISTRY.get(obj.name) is not obj:  # a module may have registered it already
                register(obj)
        elif not isinstance(obj, types.ModuleType):
            raise TypeError(f"{ep.value} is {type(obj).__name__}, neither a module nor a "
                            "MethodSpec")
        taken = [n for n in before if _REGISTRY.get(n) is not before[n]]
        if taken:
            raise NameError(f"method name {', '.join(map(repr, taken))} is already registered")
        for name, spec in _REGISTRY.items():
            if not isinstance(spec, MethodSpec) or spec.name != name:
                raise TypeError(f"registered {name!r} is not a MethodSpec named {name!r}")
    except KeyboardInterrupt:  # Ctrl-C while a plugin imports still stops the program
        raise
    except BaseException as exc:  # noqa: BLE001 — a broken plugin, even one calling sys.exit,
        # must never break dimalign
        _REGISTRY.clear()
        _REGISTRY.update(before)
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
    return tuple(_REGISTRY)  # registration order: the built-ins, then the plugins


_plugins_lock = threading.RLock()  # the app's sessions are threads; a plugin may import us
_plugins_started = False


def load_plugins() -> tuple[str, ...]:
    """ORDER, loading the plugins on the first call. A plugin that reads this package while it
    loads sees the methods registered so far."""
    global _plugins_started, ORDER, REGISTRY
    with _plugins_lock:
        if not _plugins_started:
            _plugins_started = True
            ORDER, REGISTRY = _load_plugins(), _REGISTRY  # read directly from now on
    return globals().get("ORDER") or tuple(_REGISTRY)


def __getattr__(name: str):
    """`ORDER` and `REGISTRY` load the plugins when first read (PEP 562)."""
    if name == "ORDER":
        return load_plugins()
    if name == "REGISTRY":
        load_plugins()
        return _REGISTRY
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REGISTRY", "ORDER", "BUILTIN", "Knob", "MethodSpec", "PluginWarning", "get_method",
           "load_plugins", "register"]
