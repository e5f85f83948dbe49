"""Where dimalign keeps data, cached models and runs: `$DIMALIGN_HOME` (default ~/.dimalign).

Files that refer to other files (a result's folder, the run store's artifacts index) store
their paths relative to the home and resolve them here on read, so a home copied or moved
elsewhere keeps working and never writes into the one it came from.
"""

from __future__ import annotations

import os
from pathlib import Path


class PathError(ValueError):
    """A folder or file dimalign was told to use cannot be used; the message names it."""


def home() -> Path:
    path = Path(os.environ.get("DIMALIGN_HOME", "~/.dimalign")).expanduser()
    if path.exists() and not path.is_dir():
        raise PathError(f"DIMALIGN_HOME={str(path)!r} is a file, not a folder: point "
                        "DIMALIGN_HOME at a folder (it is created when missing)")
    return path


def data_dir() -> Path:
    return home() / "data"


def models_dir() -> Path:
    return home() / "models"


def offline() -> bool:
    """True when DIMALIGN_OFFLINE is set: never try to download, fail fast with the hint."""
    return os.environ.get("DIMALIGN_OFFLINE", "").lower() in ("1", "true", "yes")


def runs_dir() -> Path:
    return home() / "runs"


def relative_to_home(path: Path | str) -> str:
    """`path` as stored in a file: relative to the home when it lies inside it."""
    path = Path(path)
    try:
        return str(path.relative_to(home()))
    except ValueError:
        return str(path)


def resolve_in_home(stored: Path | str) -> Path:
    """A path read from a file, made absolute: a relative one lies in this home; an absolute
    one inside this home stays; an absolute one under another home's `runs/` (a copied or
    moved home) is mapped by its run folder's name into this home's `runs/`."""
    path, here = Path(stored), home()
    if not path.is_absolute():
        return here / path
    if path.is_relative_to(here):
        return path
    parents = path.parts[:-1]
    if "runs" in parents:
        at = len(parents) - 1 - parents[::-1].index("runs")  # the last "runs" folder
        return runs_dir().joinpath(*path.parts[at + 1:])
    return path


DATA_ROOTS_ENV = "DIMALIGN_DATA_ROOTS"


def data_roots() -> list[Path]:
    """The folders under which the web app may read a person's own image folder or checkpoint:
    `DIMALIGN_DATA_ROOTS` (separated by os.pathsep), set by whoever starts the server; none by
    default. The command line takes any path: it is the machine owner's tool."""
    text = os.environ.get(DATA_ROOTS_ENV, "")
    return [Path(part).expanduser().resolve() for part in text.split(os.pathsep) if part.strip()]


def web_path(text: str, what: str) -> str:
    """A path typed into a page, as the absolute path it resolves to (symlinks followed), when
    that lies under one of the server's data roots (and not in dimalign's own home); a relative
    one is taken under the first root. Refused otherwise, and always without a word about what
    is at the path, so that a page is no way to look around the server: with no roots set,
    nothing is even looked up. The roots must not be writable by participants: a link placed
    inside one would be followed when the folder is read."""
    roots = data_roots()
    if not roots:
        raise PathError(f"{what}: this server reads no folder or file named on a page; whoever "
                        f"starts it can allow the folders under some with {DATA_ROOTS_ENV}="
                        f"/data/a{os.pathsep}/data/b")
    own = home().resolve()  # never the server's own files (others' uploads, runs, models)
    if all(root.is_relative_to(own) for root in roots):  # the server's set-up, said as such
        raise PathError(f"{what}: this server's data roots ({', '.join(map(str, roots))}) lie "
                        f"inside dimalign's home ({own}), where no page may read; whoever starts "
                        f"it must name folders outside it in {DATA_ROOTS_ENV}")
    roots = [root for root in roots if not root.is_relative_to(own)]
    rule = (f"{what} must lie under this server's data roots ("
            + ", ".join(str(r) for r in roots) + ")")
    typed = text.strip()
    # no "..": resolving "/out/link/../../root/x" would tell a link from a folder outside
    if not typed or "\x00" in typed or ".." in Path(typed).parts:
        raise PathError(rule)
    try:
        path = (roots[0] / typed).resolve()  # an absolute `typed` replaces the root
    except (OSError, RuntimeError):  # a symlink loop, a name too long: refused alike
        raise PathError(rule) from None
    if path.is_relative_to(own) or not any(path.is_relative_to(root) for root in roots):
        raise PathError(rule)
    return str(path)
