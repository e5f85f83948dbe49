"""A participant's own data through the web, as uploads instead of server paths: an ImageFolder
tree as a zip, and a state-dict file. Each is size-limited, checked before anything is written,
unpacked safely and kept in that owner's area, `$DIMALIGN_HOME/uploads/<owner>/`, under the
content's hash (the same upload twice is one copy). The page then uses the path this module
made, never one typed by the participant.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from io import BytesIO
from pathlib import Path, PurePosixPath

from dimalign import checked
from dimalign.paths import PathError, home
from dimalign.store import check_owner

UPLOAD_MB_ENV = "DIMALIGN_UPLOAD_MB"
UPLOAD_MB = 200  # the default cap of one upload, and of a zip's unpacked size x4
QUOTA_MB_ENV = "DIMALIGN_UPLOAD_QUOTA_MB"
QUOTA_MB = 2000  # the default cap of everything one owner has uploaded, unpacked
MAX_MEMBERS = 20_000  # files in one zip
DISK_RESERVE = 1 << 30  # an upload never leaves the home's disk with less than this free
READABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)


class UploadRefused(PathError):
    """An upload that is not kept; the message says why in one line."""


def _megabytes(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        megabytes = float(text)
    except ValueError:
        raise UploadRefused(f"{name}={text!r} is not a number of megabytes") from None
    if not 0 < megabytes <= 1_000_000:
        raise UploadRefused(f"{name}={text!r} must lie in (0, 1000000]")
    return int(megabytes * 2**20)


def upload_limit() -> int:
    """Bytes one upload may have (`DIMALIGN_UPLOAD_MB`, default 200); a zip may unpack to 4x."""
    return _megabytes(UPLOAD_MB_ENV, UPLOAD_MB)


def _check_room(owner: str, adding: int) -> None:
    """Refuse an upload that would take the owner past their quota (`DIMALIGN_UPLOAD_QUOTA_MB`,
    default 2000, everything they uploaded, unpacked) or the home's disk below 1 GB free."""
    area, quota = owner_area(owner), _megabytes(QUOTA_MB_ENV, QUOTA_MB)
    used = sum(f.stat().st_size for f in area.rglob("*") if f.is_file()) if area.exists() else 0
    if used + adding > quota:
        raise UploadRefused(f"your uploads take {used / 2**20:.0f} MB and this one "
                            f"{adding / 2**20:.0f} MB more; each participant may keep "
                            f"{quota / 2**20:.0f} MB here ({QUOTA_MB_ENV})")
    existing = next((p for p in (area, *area.parents) if p.exists()), None)
    if existing is not None and shutil.disk_usage(existing).free < adding + DISK_RESERVE:
        raise UploadRefused("this server's disk is too full to keep the upload")


def owner_area(owner: str) -> Path:
    return home() / "uploads" / check_owner(owner)


def hide_server_paths(text: str) -> str:
    """`text` (an error about an upload) with each upload's folder on this server said as "your
    upload": a page must not show participants where the server keeps its home."""
    roots = {str(home() / "uploads"), str((home() / "uploads").resolve())}  # as said, and as
    # a scan says it (resolved: a home that is a link or relative is named by where it leads)
    for root in sorted(roots, key=len, reverse=True):
        text = re.sub(re.escape(root) + r"/[^/\s'\"]+/[^/\s'\"]+", "your upload", text)
    return text


def _checked_size(data: bytes, what: str) -> None:
    limit = upload_limit()
    if len(data) > limit:
        raise UploadRefused(f"{what} is {len(data) / 2**20:.1f} MB; this server takes at most "
                            f"{limit / 2**20:.0f} MB ({UPLOAD_MB_ENV})")
    if not data:
        raise UploadRefused(f"{what} is empty")


def save_checkpoint(data: bytes, owner: str) -> Path:
    """A state-dict upload, kept as `<owner area>/<sha256[:16]>.pt`; what it holds is checked
    where every checkpoint is (train.load_original: weights only, the model's keys)."""
    _checked_size(data, "The checkpoint")
    path = owner_area(owner) / f"{checked.digest(data)[:16]}.pt"
    if not path.exists():
        _check_room(owner, len(data))
        checked.save(path, data)  # atomic, with its sha256 beside it
    return path


def unpack_imagefolder(data: bytes, owner: str) -> Path:
    """A zip of an ImageFolder tree (class folders at its top, or inside one top folder),
    unpacked into `<owner area>/<sha256[:16]>/` and that folder's class root returned. Refused
    whole, before anything is written, when a member's name is absolute, climbs out with `..`,
    or is a link, is encrypted or compressed in a way zipfile cannot read, or when it holds too
    many files or unpacks to more than 4x the upload cap; a damaged member found while it is
    written (a bad CRC, corrupt data) refuses it whole too, and nothing is kept."""
    _checked_size(data, "The zip")
    try:
        archive = zipfile.ZipFile(BytesIO(data))
        members = archive.infolist()
    except (*DAMAGED, OSError, ValueError):
        raise UploadRefused("The zip cannot be read as a zip file") from None
    budget = 4 * upload_limit()
    _check_members(members, budget)
    folder = owner_area(owner) / checked.digest(data)[:16]
    if not folder.exists():
        _check_room(owner, sum(m.file_size for m in members))
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".unpacking-"))
        try:
            try:
                _extract(archive, members, staging, budget)
            except DAMAGED:  # zipfile's ways of saying a member cannot be read as it claims
                raise UploadRefused("The zip is damaged (a member does not read back as its "
                                    "header says); zip the folder again") from None
            os.replace(staging, folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not folder.is_dir():  # else the same zip, unpacked by another session meanwhile
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return _class_root(folder)


def _check_members(members: list[zipfile.ZipInfo], budget: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise UploadRefused(f"The zip holds {len(members)} entries; at most {MAX_MEMBERS}")
    if sum(m.file_size for m in members) > budget:
        raise UploadRefused(f"The zip unpacks to more than {budget / 2**20:.0f} MB")
    for member in members:
        name = _member_path(member)
        if name.is_absolute() or ".." in name.parts or DRIVE.match(member.filename):
            raise UploadRefused("The zip has a member outside its own folder (an absolute "
                                "path, a drive or '..'); zip the folder itself")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise UploadRefused("The zip holds a link; zip the images themselves")
        if member.flag_bits & 0x1:
            raise UploadRefused("The zip is encrypted; zip the folder without a password")
        if member.compress_type not in READABLE:
            raise UploadRefused("The zip uses a compression this server cannot read; zip the "
                                "folder with ordinary (deflate) compression")


DRIVE = re.compile(r"^[A-Za-z]:")  # "C:evil.png": a Windows drive, outside any folder


def _member_path(member: zipfile.ZipInfo) -> PurePosixPath:
    """A member's name as a path (Windows zips may separate with backslashes)."""
    return PurePosixPath(member.filename.replace("\\", "/"))


def _extract(archive: zipfile.ZipFile, members, target: Path, budget: int) -> None:
    written = 0
    for member in members:
        path = target.joinpath(*_member_path(member).parts)
        if member.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as src, open(path, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > budget:
                    raise UploadRefused(f"The zip unpacks to more than {budget / 2**20:.0f} MB")
                out.write(chunk)


def _class_root(folder: Path) -> Path:
    """The folder holding the class folders: the unpacked folder, or its only sub-folder when
    the zip was made of one folder (macOS's `__MACOSX` and dot entries aside)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")
               and p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and all(
            p.is_dir() for p in entries[0].iterdir() if not p.name.startswith(".")):
        inner = [p for p in entries[0].iterdir() if p.is_dir()]
        if len(inner) >= 2 or (entries[0] / "train").is_dir():
            return entries[0]
    return folder
