"""Dataset registry: what each dataset is (static facts, no I/O) and how to load it.

Every loader returns uint8 images `(N, C, H, W)` and int64 labels `(N,)` for train and test,
on the CPU. `digits` ships inside scikit-learn and works offline; the others come through
torchvision and are downloaded on first use into `$DIMALIGN_HOME/data`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dimalign import paths

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
