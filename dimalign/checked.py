"""Checksummed files: every cached model and run artifact dimalign writes goes through here.

`save` writes a file atomically (a temporary file beside it, flushed to disk, then
`os.replace`) with the sha256 of its bytes in a sidecar, `NAME.sha256`, in `sha256sum` format
(so `sha256sum -c NAME.sha256` checks it by hand). `load` reads the bytes once, checks them
against the sidecar and only then parses them. A file whose bytes do not match, or that its
parser cannot read (truncated, garbage, a file torch cannot load), is *damaged*: it is renamed
to `NAME.damaged-<UTC time>` (its sidecar goes with it; nothing is deleted) and `DamagedFile`
says so in one line, so the caller can recover: train the model again, recompute the result.

A file without a sidecar was written before checksums existed: `load` accepts it when it
parses and writes its sidecar then (it cannot know about bytes flipped before that).
`verify` tells a caller that needs the proof (reusing a saved result) whether it has one.

A write that finds the disk full removes its temporary file and raises `DiskFull`, whose
message names the file: "disk full at PATH".

Torch files are always read with `weights_only=True`. This module imports no other dimalign
module and no torch at import time (the store imports it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
SUFFIX = ".sha256"
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DamagedFile(RuntimeError):
    """A file failed its checksum or could not be parsed; it has been set aside."""

    def __init__(self, path: Path, reason: str, aside: Path | None):
        self.path, self.reason, self.aside = Path(path), reason, aside
        self.where = f"set aside as {aside}" if aside else "already set aside by another process"
        super().__init__(f"{path} is damaged ({reason}); {self.where}")


class DiskFull(RuntimeError):
    """A write found no space left on the device."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        super().__init__(f"disk full at {path}: free some space, then try again")


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, DiskFull) or (isinstance(err, OSError) and err.errno in _FULL)


def sidecar(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- writing


def _write_temp(path: Path, data: bytes, report: Path) -> Path:
    """`data` in a temporary file beside `path`, flushed to disk; the file is removed if
    anything fails (DiskFull, naming `report`, when the disk is full)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise DiskFull(report) from None
        raise
    return tmp


def _stamp(path: Path, data: bytes) -> bytes:
    return f"{digest(data)}  {path.name}\n".encode()


def save(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` atomically, with its sha256 in the sidecar. Both are written in
    full before either replaces what was there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path, data, path)
    try:
        tmp_sum = _write_temp(sidecar(path), _stamp(path, data), path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    os.replace(tmp_sum, sidecar(path))


def _write_sidecar(path: Path, data: bytes) -> None:
    os.replace(_write_temp(sidecar(path), _stamp(path, data), path), sidecar(path))


def save_torch(obj: Any, path: Path | str) -> None:
    """`torch.save(obj)` into memory, then `save`: a full disk is a plain OSError that way."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    save(path, buffer.getvalue())


def save_json(obj: Any, path: Path | str, indent: int | None = None) -> None:
    save(path, json.dumps(obj, indent=indent).encode())


def reseal(path: Path | str) -> None:
    """Accept the file's present bytes as intended (a deliberate edit): rewrite its sidecar."""
    path = Path(path)
    _write_sidecar(path, path.read_bytes())


def remove(path: Path | str) -> None:
    """Delete a file and its sidecar (either may be missing)."""
    for p in (Path(path), sidecar(path)):
        p.unlink(missing_ok=True)


def move(src: Path | str, dst: Path | str) -> None:
    """Rename a file and its sidecar (a missing sidecar removes the destination's)."""
    os.replace(src, dst)
    if sidecar(src).exists():
        os.replace(sidecar(src), sidecar(dst))
    else:
        sidecar(dst).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- reading


def _recorded(path: Path) -> str | None:
    """The digest the sidecar records, None without a sidecar ('' if it is unreadable)."""
    try:
        text = sidecar(path).read_text(errors="replace")
    except FileNotFoundError:
        return None
    return text.split()[0].lower() if text.split() else ""


def _identity(path: Path) -> tuple:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read(path: Path) -> tuple[bytes, str | None, bool, tuple]:
    """(bytes, recorded digest, whether they match, the file's identity when read). A writer
    replaces the file, then its sidecar: a reader between the two sees a mismatch, so a
    mismatch is looked at again."""
    for wait in (0.05, 0.2, 0.0):
        recorded = _recorded(path)
        identity = _identity(path)
        data = path.read_bytes()
        if recorded is None or digest(data) == recorded:
            return data, recorded, recorded is not None, identity
        if wait:
            time.sleep(wait)
    return data, recorded, False, identity


def set_aside(path: Path | str) -> Path | None:
    """Rename a damaged file (and its sidecar) to NAME.damaged-<UTC time>; None when it is
    gone already (another process set it aside first)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    if sidecar(path).exists():
        with contextlib.suppress(OSError):
            os.replace(sidecar(path), sidecar(aside))
    return aside


def damaged(path: Path | str, reason: str) -> DamagedFile:
    """Set the file aside and return the error that says so (for the caller to raise)."""
    return DamagedFile(Path(path), reason, set_aside(path))


def verify(path: Path | str) -> bool:
    """True when the file matches its sidecar, False when it has none (written before
    checksums); a mismatch sets it aside and raises DamagedFile."""
    path = Path(path)
    _, recorded, ok, _ = _read(path)
    if recorded is None:
        return False
    if not ok:
        raise damaged(path, "its bytes do not match its sha256")
    return True


def load(path: Path | str, parse: Callable[[bytes], T]) -> T:
    """The parsed contents of a checked file. FileNotFoundError when it is missing;
    DamagedFile (after setting it aside) when its checksum or its parser fails."""
    path = Path(path)
    data, recorded, ok, identity = _read(path)
    if recorded is not None and not ok:
        raise damaged(path, "its bytes do not match its sha256")
    try:
        value = parse(data)
    except Exception as err:  # noqa: BLE001 - whatever the parser says, the file is unusable
        raise damaged(path, f"cannot be read: {type(err).__name__}") from None
    if recorded is None:  # written before checksums: it parses, so adopt it
        with contextlib.suppress(OSError, DiskFull):  # a read must not fail for want of space
            if not sidecar(path).exists() and _identity(path) == identity:  # not replaced since
                _write_sidecar(path, data)
    return value


def load_torch(path: Path | str) -> Any:
    """A checked torch file, loaded on the CPU with `weights_only=True`."""
    import torch

    return load(path, lambda data: torch.load(io.BytesIO(data), map_location="cpu",
                                              weights_only=True))


def load_json(path: Path | str) -> Any:
    return load(path, json.loads)
