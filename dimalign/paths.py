"""Where dimalign keeps data, cached models and runs: `$DIMALIGN_HOME` (default ~/.dimalign)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("DIMALIGN_HOME", "~/.dimalign")).expanduser()


def data_dir() -> Path:
    return home() / "data"


def models_dir() -> Path:
    return home() / "models"


def offline() -> bool:
    """True when DIMALIGN_OFFLINE is set: never try to download, fail fast with the hint."""
    return os.environ.get("DIMALIGN_OFFLINE", "").lower() in ("1", "true", "yes")


def runs_dir() -> Path:
    return home() / "runs"
