"""The torchvision loaders, on small files written in each dataset's real on-disk format."""

import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from dimalign.config import build_config
from dimalign.data import build_experiment, load_arrays
from dimalign.datasets import DATASETS, DatasetUnavailable


def write_idx(path, array: np.ndarray, magic_type: int = 0x08) -> None:
    """IDX format (MNIST): magic (0, 0, type, ndim), big-endian dims, then the raw bytes."""
    header = struct.pack(">BBBB", 0, 0, magic_type, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(root, folder: str, n_train: int, n_test: int, rng) -> dict:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar(root, cls, n_per_file: int, num_classes: int, rng, monkeypatch) -> dict:
    """Pickled batches as CIFAR ships them; the class's checksums are pointed at our files."""
    base = root / cls.base_folder
    base.mkdir(parents=True)
    label_key = "labels" if num_classes == 10 else "fine_labels"
    written = {}

    def dump(name, obj):
        (base / name).write_bytes(pickle.dumps(obj))
        return [name, hashlib.md5((base / name).read_bytes()).hexdigest()]

    def batch(name):
        data = rng.integers(0, 256, (n_per_file, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(v) for v in np.arange(n_per_file) % num_classes]
        written[name] = (data, labels)
        return dump(name, {"data": data, label_key: labels})

    train_list = [batch(name) for name, _ in cls.train_list]
    test_list = [batch(name) for name, _ in cls.test_list]
    names_key = "label_names" if num_classes == 10 else "fine_label_names"
    meta_name = cls.meta["filename"]
    meta_md5 = dump(meta_name, {names_key: [f"c{i}" for i in range(num_classes)]})[1]
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    return written


@pytest.fixture()
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path))
    monkeypatch.setenv("DIMALIGN_OFFLINE", "1")  # a test must never reach for the network
    load_arrays.cache_clear()
    yield tmp_path / "data"
    load_arrays.cache_clear()


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_loaders_read_idx_files(data_home, name, folder):
    rng = np.random.default_rng(0)
    arrays = write_mnist_like(data_home, folder, 50, 20, rng)
    x_tr, y_tr, x_te, y_te = DATASETS[name].load(0)
    assert x_tr.shape == (50, 1, 28, 28) and x_te.shape == (20, 1, 28, 28)
    assert x_tr.dtype == torch.uint8 and y_tr.dtype == torch.int64
    assert np.array_equal(x_tr[:, 0].numpy(), arrays["train"][0])
    assert np.array_equal(y_te.numpy(), arrays["t10k"][1])
    # the scenario machinery runs on it as on digits
    exp = build_experiment(build_config("mnist-class", [f"dataset={name}"]))
    assert set(exp.y_train[exp.forget].tolist()) == {3}


@pytest.mark.parametrize("name, cls, classes", [("cifar10", tvd.CIFAR10, 10),
                                                ("cifar100", tvd.CIFAR100, 100)])
def test_cifar_loaders_read_pickled_batches(data_home, monkeypatch, name, cls, classes):
    rng = np.random.default_rng(1)
    written = write_cifar(data_home, cls, 8, classes, rng, monkeypatch)
    x_tr, y_tr, x_te, y_te = DATASETS[name].load(0)
    n_train_files = len(cls.train_list)
    assert x_tr.shape == (8 * n_train_files, 3, 32, 32) and x_te.shape == (8, 3, 32, 32)
    first_data, first_labels = written[cls.train_list[0][0]]
    expected = torch.from_numpy(first_data.reshape(8, 3, 32, 32))
    assert torch.equal(x_tr[:8], expected)  # channels-first, pixel for pixel
    assert y_tr[:8].tolist() == first_labels


def test_missing_dataset_offline_names_dataset_folder_and_fix(data_home):
    with pytest.raises(DatasetUnavailable) as info:
        DATASETS["cifar10"].load(0)
    text = str(info.value)
    assert "'cifar10'" in text and str(data_home) in text and "To fix" in text
    assert "digits" in text  # and points at what works offline


def test_cli_reports_missing_dataset_in_one_line_without_traceback(data_home, cli_process):
    proc = cli_process("run", "--preset", "mnist-class", timeout=120)  # exit code 3: contract
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "Dataset 'mnist'" in proc.stderr and str(data_home) in proc.stderr
    assert proc.stdout == ""
