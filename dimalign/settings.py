"""Settings read from the environment, checked: a wrong one is one line (ConfigError naming
the variable), said in the foreground before a background process would fail on it unseen."""

from __future__ import annotations

import os

from dimalign.errors import ConfigError


def env_number(name: str, kind: type, default, low: float | None = None):
    """An environment setting as a number (`default` when unset); ConfigError (one line,
    naming the variable) when it is not one or lies below `low`."""
    text = os.environ.get(name)
    if text is None:
        return default
    word = "a whole number" if kind is int else "a number"
    try:
        value = kind(text.strip())
    except ValueError:
        value = None
    if value is None or value != value or (low is not None and value < low):
        bound = f" of at least {low:g}" if low is not None else ""
        raise ConfigError(name, f"must be {word}{bound}, got {text!r}")
    return value
