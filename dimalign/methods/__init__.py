"""The method registry: MUDA and the baselines, each with a name, a description, its paper and
typed knobs. Pages and the CLI build pickers and sliders from `REGISTRY`."""

from dimalign.config import ConfigError
from dimalign.methods import baselines, muda  # noqa: F401  (registers the methods)
from dimalign.methods.base import REGISTRY, Knob, MethodSpec

ORDER = ("retrain", "ft", "ga", "neggrad_plus", "rl", "l1_sparse", "salun", "scrub",
         "bad_teacher", "muda")


def get_method(name: str) -> MethodSpec:
    if name not in REGISTRY:
        raise ConfigError("--method", f"unknown method {name!r}; choose one of "
                          f"{', '.join(ORDER)}")
    return REGISTRY[name]


__all__ = ["REGISTRY", "ORDER", "Knob", "MethodSpec", "get_method"]
