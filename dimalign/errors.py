"""The error every wrong setting raises, whichever module finds it.

This module imports nothing from dimalign, so the config, the method registry (which checks
method knobs) and everything else can raise and catch `ConfigError` without importing one
another. `dimalign.config.ConfigError` names the same class, for code written before it moved.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and what is allowed."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")
