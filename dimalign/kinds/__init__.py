"""The job kinds: every module of this package other than `base` registers one (a new kind is
one new file), imported here in name order. `REGISTRY` maps a kind's name to its `JobKind`."""

import importlib
import pkgutil

from dimalign.kinds.base import (
    REGISTRY,
    Hooks,
    Job,
    JobKind,
    RunRef,
    Throttle,
    get_kind,
    index_files,
    make_folder,
    register,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")  # registers its kind

__all__ = ["REGISTRY", "Hooks", "Job", "JobKind", "RunRef", "Throttle", "get_kind",
           "index_files", "make_folder", "register"]
