"""Dataset registry: what each dataset is (static facts, no I/O) and how to load it.

Every loader returns uint8 images `(N, C, H, W)` and int64 labels `(N,)` for train and test,
on the CPU. `digits` ships inside scikit-learn and works offline; the others come through
torchvision and are downloaded on first use into `$DIMALIGN_HOME/data`. `imagefolder` reads the
user's own images (one folder per class); its facts come from a scan of that folder
(`folder_info`), its mean and std from the training images once they are loaded (`channel_stats`).
Whatever is wrong with that folder is a `ConfigError` on `dataset_root`, found when scanning or
when decoding alike. Links in it are followed, but not out of it unless
DIMALIGN_FOLLOW_OUTSIDE_LINKS=1 is set.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dimalign import checked, paths
from dimalign.errors import ConfigError

Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # x_tr, y_tr, x_te, y_te

DIGITS_TEST_FRACTION = 0.3  # at least 25 % test, as the product promises


class DatasetUnavailable(RuntimeError):
    """The dataset is not on disk and could not be downloaded. The message says what to do."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    num_classes: int
    channels: int
    size: int  # images are size x size
    n_train: int
    n_test: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[[int], Arrays]  # seed -> arrays (the seed matters only where we split)
    torchvision_class: str = ""  # empty for embedded data
    fingerprint: str = ""  # imagefolder: identity of the files read (FolderScan.fingerprint)

    @property
    def embedded(self) -> bool:
        return not self.torchvision_class


def _digits_file() -> Path:
    # The CSV that sklearn.datasets.load_digits reads; found without importing scikit-learn
    # (whose import costs over a second), so a cached run starts fast.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable("Dataset 'digits' needs scikit-learn: pip install scikit-learn")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int):
    """Per class, a seeded ceil(test_fraction * n_c) go to test. Returns sorted index arrays."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(np.ceil(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _load_digits(seed: int) -> Arrays:
    table = np.loadtxt(_digits_file(), delimiter=",", dtype=np.int64)  # (1797, 65): pixels, label
    images = np.rint(table[:, :64] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = table[:, 64]
    idx_tr, idx_te = stratified_split(labels, DIGITS_TEST_FRACTION, seed)
    as_t = torch.from_numpy
    return (as_t(images[idx_tr]), as_t(labels[idx_tr]), as_t(images[idx_te]), as_t(labels[idx_te]))


def _to_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.as_tensor(np.asarray(ds.data))
    x = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)  # -> (N, C, H, W)
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return x.contiguous().to(torch.uint8), y


def _torchvision_loader(name: str, class_name: str) -> Callable[[int], Arrays]:
    def load(seed: int) -> Arrays:
        import torchvision.datasets as tvd

        cls, root = getattr(tvd, class_name), paths.data_dir()
        try:
            train, test = cls(str(root), train=True), cls(str(root), train=False)
        except RuntimeError as missing:
            if paths.offline():
                reason = f"{missing}; DIMALIGN_OFFLINE is set, so no download was tried"
                raise DatasetUnavailable(_unavailable(name, class_name, reason)) from None
            root.mkdir(parents=True, exist_ok=True)
            try:
                train = cls(str(root), train=True, download=True)
                test = cls(str(root), train=False, download=True)
            except Exception as err:  # URLError, HTTP errors, corrupted archives...
                raise DatasetUnavailable(_unavailable(name, class_name, str(err))) from None
        return (*_to_tensors(train), *_to_tensors(test))

    return load


def _unavailable(name: str, class_name: str, reason: str) -> str:
    return (f"Dataset '{name}' is not in {paths.data_dir()} and could not be downloaded "
            f"({reason.strip() or 'no network'}). To fix: run once with internet access so "
            f"torchvision can download it there, or copy torchvision's {class_name} files into "
            f"that folder (set DIMALIGN_HOME to use another place). The embedded dataset "
            f"'digits' always works offline.")


def _tv(name, title, classes, channels, size, n_train, n_test, mean, std, class_name):
    return DatasetInfo(name, title, classes, channels, size, n_train, n_test, mean, std,
                       _torchvision_loader(name, class_name), class_name)


# ---------------------------------------------------------------------------- your own images

IMAGEFOLDER = "imagefolder"
FOLDER_TEST_FRACTION = 0.2  # per class, when the folder has no train/ and test/ of its own
# what torchvision's ImageFolder reads
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # more than 8 bits a pixel
GRAY_MODES = ("1", "L", "LA", *WIDE_MODES)


@dataclass(frozen=True)
class FolderScan:
    """What a scan of an ImageFolder tree finds, without decoding any image."""

    root: str  # absolute
    classes: tuple[str, ...]  # folder names, sorted: label i is classes[i]
    files: tuple[str, ...]  # image paths relative to root
    labels: tuple[int, ...]
    test: tuple[bool, ...] | None  # from root/train and root/test; None: split by the seed
    channels: int  # 1 when the first image of every class is grayscale, else 3
    fingerprint: str  # sha256 of the root, the split, the classes and each file's bytes


def follow_outside_links() -> bool:
    """True when DIMALIGN_FOLLOW_OUTSIDE_LINKS is set: an ImageFolder tree may link to folders
    and images outside itself. Off by default: a stray link could pull in any file this process
    can read, and the page's folder roots would mean nothing."""
    return os.environ.get("DIMALIGN_FOLLOW_OUTSIDE_LINKS", "").lower() in ("1", "true", "yes")


def _bad_root(message: str) -> ConfigError:
    return ConfigError("dataset_root", message)


def _ident(path: Path) -> tuple[int, int]:
    st = os.stat(path)  # follows links: the real folder or file
    return st.st_dev, st.st_ino


def _check_inside(path: Path, root: Path) -> None:
    if not follow_outside_links() and not path.resolve().is_relative_to(root):
        raise _bad_root(f"{str(path.relative_to(root))!r} leads out of the folder through a "
                        "link; copy what it links to into the folder, or set "
                        "DIMALIGN_FOLLOW_OUTSIDE_LINKS=1 to follow such links")


def _class_files(folder: Path, root: Path, owner: dict) -> tuple[list[str], list[str]]:
    """(sorted class names, per class its sorted image paths relative to root) of folder.

    Links are followed, each real folder once per class: a link to the class folder or above it
    is a loop and adds nothing. Each real image counts once; `owner` (shared by train/ and
    test/) maps its (st_dev, st_ino) to (class folder, path), so an image reached from two class
    folders is refused rather than labelled twice."""
    classes = sorted(e.name for e in os.scandir(folder)
                     if not e.name.startswith(".") and _kind(e) == "dir")
    files = []
    for name in classes:
        top, found = folder / name, []
        _check_inside(top, root)
        seen = {_ident(root), _ident(folder), _ident(top)}
        _walk(top, str(top.relative_to(root)), root, seen, owner, found)
        files.append(sorted(found))
    return classes, files


def _walk(where: Path, cls: str, root: Path, seen: set, owner: dict, found: list[str]) -> None:
    """Add to `found` the images under `where` (in class folder `cls`) that no other path
    reached before; `seen`: the real folders this class has walked, its ancestors included."""
    try:
        entries = sorted(os.scandir(where), key=lambda e: e.name)
    except OSError as err:
        raise _bad_root(f"cannot read folder {str(where.relative_to(root))!r} "
                        f"({err.strerror})") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path, kind = where / entry.name, _kind(entry)
        if kind == "dir":
            ident = _ident(path)
            if ident not in seen:
                _check_inside(path, root)
                seen.add(ident)
                _walk(path, cls, root, seen, owner, found)
        elif kind == "file" and entry.name.lower().endswith(IMAGE_EXTENSIONS):
            _check_inside(path, root)
            rel = str(path.relative_to(root))
            first, first_cls = owner.setdefault(_ident(path), (rel, cls))
            if first_cls != cls:
                raise _bad_root(f"{first!r} and {rel!r} are the same file, in class folders "
                                f"{first_cls!r} and {cls!r}; an image must lie in one class "
                                "folder only")
            if first == rel:
                found.append(rel)


def _kind(entry: os.DirEntry) -> str:
    """'dir' or 'file', through links; '' for anything else, a broken link included."""
    try:
        return "dir" if entry.is_dir() else "file" if entry.is_file() else ""
    except OSError:  # a link that leads to itself (ELOOP) is as broken
        return ""


def scan_folder(root: str) -> FolderScan:
    """Scan an ImageFolder tree; ConfigError on dataset_root (one line, saying what to fix) if
    unusable."""
    if not root:
        raise _bad_root("dataset=imagefolder needs dataset_root=PATH: a folder with one "
                        "sub-folder of images per class")
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise _bad_root(f"folder {str(base)!r} does not exist")
    split = (base / "train").is_dir() and (base / "test").is_dir()
    owner: dict = {}  # each real image: its first path and class folder, train/ and test/ alike
    classes, per_class = _class_files(base / "train" if split else base, base, owner)
    if len(classes) < 2:
        raise _bad_root(f"{str(base)!r} has {len(classes)} class folder(s); an ImageFolder "
                        "tree needs one sub-folder of images per class, at least 2 of them")
    empty = [c for c, f in zip(classes, per_class, strict=True) if not f]
    if empty:
        raise _bad_root(f"class folder {empty[0]!r} holds no images "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    files = [f for f in per_class for f in f]
    labels = [i for i, f in enumerate(per_class) for _ in f]
    test = None
    if split:
        test_classes, test_files = _class_files(base / "test", base, owner)
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise _bad_root(f"test/{unknown[0]} is not a class of train/ ({', '.join(classes)})")
        for name, found in zip(test_classes, test_files, strict=True):
            files += found
            labels += [classes.index(name)] * len(found)
        n_train = sum(map(len, per_class))
        if len(files) == n_train:
            raise _bad_root(f"{str(base / 'test')!r} holds no images")
        test = tuple([False] * n_train + [True] * (len(files) - n_train))
    else:
        few = [c for c, f in zip(classes, per_class, strict=True) if len(f) < 2]
        if few:
            raise _bad_root(f"class folder {few[0]!r} holds one image; the train/test split "
                            "needs at least 2 per class")
    channels = 1 if all(_mode(base / f[0]) in GRAY_MODES for f in per_class) else 3
    h = hashlib.sha256(json.dumps([str(base), split, classes]).encode())
    for f, digest in zip(files, _content_hashes(base, files), strict=True):
        h.update(f"{f}\0{digest}\n".encode())
    return FolderScan(str(base), tuple(classes), tuple(files), tuple(labels), test, channels,
                      h.hexdigest())


def _content_hashes(base: Path, files) -> list[str]:
    """The sha256 of each file's bytes. A file is read again only when its stat identity (size,
    modification and change time, inode) differs from the last scan's, kept in
    $DIMALIGN_HOME/data/imagefolder/hashes-*.json: a rewrite is always caught (a change time
    cannot be set back), while a copy, a chmod or another machine's copy of the same bytes
    keeps the fingerprint, and with it the cached baselines."""
    memo_path = (paths.data_dir() / IMAGEFOLDER /
                 f"hashes-{hashlib.sha256(str(base).encode()).hexdigest()[:16]}.json")
    try:
        memo = checked.load_json(memo_path)
    except (FileNotFoundError, checked.DamagedFile):  # a damaged memo is set aside: read all
        memo = {}
    digests, kept = [], {}
    for f in files:
        st = os.stat(base / f)
        ident = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        known = memo.get(f) if isinstance(memo, dict) else None
        if not (isinstance(known, list) and known[:4] == ident):
            known = [*ident, hashlib.sha256((base / f).read_bytes()).hexdigest()]
        kept[f] = known
        digests.append(known[4])
    if kept != memo:
        with contextlib.suppress(OSError, checked.DiskFull):  # a memo, not worth failing for
            checked.save_json(kept, memo_path)
    return digests


def _mode(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only
            return im.mode
    except Exception as err:  # PIL.UnidentifiedImageError, OSError...
        raise _unreadable(path, err) from None


def _unreadable(path: Path, err: Exception) -> ConfigError:
    """The same error whether the scan (a header) or decoding (the pixels) found the image bad."""
    return _bad_root(f"cannot read image {str(path)!r} ({err})")


def _decode(scan: FolderScan, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the scan, resized to size x size: uint8 (N, C, size, size), cached on disk
    under $DIMALIGN_HOME/data/imagefolder (keyed by the scan's fingerprint and the size)."""
    cache = paths.data_dir() / IMAGEFOLDER / f"{scan.fingerprint[:24]}-{size}.npz"
    try:
        return checked.load(cache, _arrays)
    except FileNotFoundError:
        pass
    except checked.DamagedFile as err:  # set aside: decode the images again
        print(f"dimalign: decoded-image cache {err}; decoding the images again",
              file=sys.stderr, flush=True)
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    mode = "L" if scan.channels == 1 else "RGB"

    def read(rel: str) -> np.ndarray:
        try:
            with Image.open(Path(scan.root) / rel) as im:
                im = _to_8bit(im).convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8).reshape(size, size, scan.channels)
        except Exception as err:
            raise _unreadable(Path(scan.root) / rel, err) from None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(read, scan.files))
    x = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))  # (N, C, H, W)
    y = np.asarray(scan.labels, dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    try:
        checked.save(cache, buffer.getvalue())
    except checked.DiskFull as err:  # only a cache: the run goes on without it
        print(f"dimalign: the decoded images were not cached ({err})", file=sys.stderr,
              flush=True)
    return x, y


def _to_8bit(im):
    """`im` with 8 bits a channel. Pillow's own convert clips wider greyscale to 0..255 (16-bit
    images turn white), so those are scaled here: by their type's range, floats as below."""
    if im.mode not in WIDE_MODES:  # 1, L, LA, P, RGB(A), CMYK...: Pillow converts them right
        return im
    from PIL import Image

    x = np.asarray(im, dtype=np.float64)  # (H, W)
    if im.mode == "F":
        if not np.isfinite(x).all():
            raise ValueError("its pixels are not finite (NaN or infinity)")
        lo, hi = x.min(), x.max()
        # [0, 1] and [0, 255] are the usual conventions; anything else is stretched per image
        if lo < 0 or hi > 255:
            x = (x - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(x)
        elif hi <= 1:
            x = x * 255
    elif im.mode == "I" and (x.min() < 0 or x.max() > 65535):  # 32-bit data
        x = x * (255 / (2**31 - 1)) if x.min() >= 0 else (x + 2**31) * (255 / (2**32 - 1))
    else:  # I;16*, and mode I within 0..65535: older Pillow opens 16-bit PNGs as I (13: I;16)
        x = x * (255 / 65535)
    return Image.fromarray(np.rint(x).astype(np.uint8))


def _arrays(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(data)) as z:
        return z["x"], z["y"]


def _load_folder(scan: FolderScan, size: int, seed: int) -> Arrays:
    x, y = _decode(scan, size)
    if scan.test is not None:
        is_test = np.asarray(scan.test)
        idx_tr, idx_te = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    else:
        idx_tr, idx_te = stratified_split(y, FOLDER_TEST_FRACTION, seed)
    as_t = torch.from_numpy
    return (as_t(x[idx_tr]), as_t(y[idx_tr]), as_t(x[idx_te]), as_t(y[idx_te]))


def folder_info(root: str, size: int) -> DatasetInfo:
    """The DatasetInfo of an ImageFolder tree at `size` x `size` pixels. Its mean and std are
    empty: `data.experiment_arrays` fills them (`channel_stats`) from the training images."""
    scan = scan_folder(root)
    labels = np.asarray(scan.labels)
    if scan.test is not None:
        n_test = int(np.sum(scan.test))
    else:
        n_test = sum(int(np.ceil(FOLDER_TEST_FRACTION * np.sum(labels == c)))
                     for c in range(len(scan.classes)))
    return DatasetInfo(IMAGEFOLDER, f"ImageFolder {scan.root} ({size}x{size})",
                       len(scan.classes), scan.channels, size, len(labels) - n_test, n_test,
                       (), (), functools.partial(_load_folder, scan, size), "ImageFolder",
                       scan.fingerprint)


def channel_stats(x_train: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of uint8 images (N, C, H, W), in [0, 1] units."""
    c = x_train.shape[1]
    total, squares = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(x_train), 1024):  # chunks: big images as float would not fit
        xb = x_train[start:start + 1024].double() / 255.0
        total += xb.sum((0, 2, 3))
        squares += (xb * xb).sum((0, 2, 3))
    n = max(1, x_train.numel() // c)
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def dataset_info(name: str, root: str = "", size: int = 32) -> DatasetInfo:
    """Facts of a dataset; for imagefolder, of the tree at `root` resized to `size`."""
    if name == IMAGEFOLDER:
        return folder_info(root, size)
    return DATASETS[name]

_N_DIGITS, _DIGITS_TEST = 1797, 544  # ceil(0.3 * n_c) summed over the ten classes
DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("digits", "scikit-learn digits (8x8, embedded)", 10, 1, 8,
                    _N_DIGITS - _DIGITS_TEST, _DIGITS_TEST,
                    (0.30,), (0.37,), _load_digits),
        _tv("mnist", "MNIST (28x28)", 10, 1, 28, 60000, 10000, (0.1307,), (0.3081,), "MNIST"),
        _tv("fashion-mnist", "Fashion-MNIST (28x28)", 10, 1, 28, 60000, 10000, (0.2860,),
            (0.3530,), "FashionMNIST"),
        _tv("cifar10", "CIFAR-10 (32x32 RGB)", 10, 3, 32, 50000, 10000,
            (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10"),
        _tv("cifar100", "CIFAR-100 (32x32 RGB)", 100, 3, 32, 50000, 10000,
            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100"),
    )
}
DATASET_NAMES = (*DATASETS, IMAGEFOLDER)  # what `dataset` accepts
