"""Your own data and model: an ImageFolder tree, a torchvision model, an original checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dimalign.config import build_config
from dimalign.data import build_experiment
from dimalign.errors import ConfigError
from dimalign.features import forward_all
from dimalign.models import build_model, feature_dim
from dimalign.train import cache_key

CLASSES, PER_CLASS = 3, 40


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """scikit-learn's digits 0..2 as 8x8 grayscale PNGs, one folder per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits-tree")
    digits = load_digits()
    for c in range(CLASSES):
        (root / f"digit{c}").mkdir()
        for i, img in enumerate(digits.images[digits.target == c][:PER_CLASS]):
            Image.fromarray(np.uint8(img * 255 / 16)).save(root / f"digit{c}" / f"{i:03}.png")
    return root


def run_json(cli, *sets: str):
    """`dimalign run --json --set S ...` in this process."""
    return cli("run", "--json", *[arg for s in sets for arg in ("--set", s)])


def folder(root, *more: str) -> list[str]:
    return ["dataset=imagefolder", f"dataset_root={root}", "scenario.classes=1",
            "train.epochs=2", *more]


def test_folder_dataset_facts_and_split(tree):
    cfg = build_config("digits-class", folder(tree, "image_size=8"))
    info = cfg.info
    assert (info.num_classes, info.channels, info.size) == (CLASSES, 1, 8)
    assert info.n_train + info.n_test == CLASSES * PER_CLASS
    assert info.n_test == CLASSES * 8  # 20 % of each class
    exp = build_experiment(cfg)
    assert exp.x_train.dtype == torch.uint8 and exp.x_train.shape[1:] == (1, 8, 8)
    assert len(exp.y_train) == info.n_train and len(exp.y_test) == info.n_test
    assert sorted(exp.y_test.unique().tolist()) == list(range(CLASSES))
    mean = exp.x_train.float().mean() / 255
    assert abs(exp.info.mean[0] - mean) < 1e-4 and exp.info.std[0] > 0
    assert cfg.model_name == "cnn"  # grayscale: the small CNN
    # the seed draws the split; an explicit train/ and test/ is taken as it is
    other = build_experiment(build_config("digits-class", folder(tree, "image_size=8", "seed=1")))
    assert not torch.equal(other.y_train, exp.y_train) or not torch.equal(
        other.x_train, exp.x_train)


def test_explicit_train_test_folders(tmp_path, tree):
    for split, (lo, hi) in (("train", (0, 30)), ("test", (30, 40))):
        for c in range(2):
            (tmp_path / split / f"digit{c}").mkdir(parents=True)
            for i in range(lo, hi):
                src = tree / f"digit{c}" / f"{i:03}.png"
                (tmp_path / split / f"digit{c}" / src.name).write_bytes(src.read_bytes())
    info = build_config("digits-class", [*folder(tmp_path, "image_size=8")[:2],
                                         "scenario.classes=0"]).info
    assert (info.num_classes, info.n_train, info.n_test) == (2, 60, 20)


def test_torchvision_model_features_and_head():
    model = build_model("torchvision:resnet18", 1, CLASSES, 32).eval()
    assert model.feature_dim == 512 == feature_dim("torchvision:resnet18", 32)
    x = torch.randn(4, 1, 32, 32)
    feats = model.features(x)
    assert feats.shape == (4, 512)
    assert torch.allclose(model(x), model.head(feats))
    # a plain torchvision state dict maps onto the wrapper, and back in error messages
    import torchvision

    plain = torchvision.models.resnet18(num_classes=CLASSES).state_dict()
    mapped = model.from_torchvision_state(plain)
    assert set(mapped) == set(model.state_dict())
    assert model.to_torchvision_key("head.weight") == "fc.weight"


def test_run_on_a_folder(tree, cli):
    out = run_json(cli, *folder(tree, "image_size=8"))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["config"]["dataset"] == "imagefolder"
    assert result["data"]["train"] + result["data"]["test"] == CLASSES * PER_CLASS
    for role in ("original", "retrained"):
        assert 0 <= result["models"][role]["acc_test"] <= 1
    assert result["models"]["original"]["acc_forget"] is not None


def test_run_with_torchvision_model_and_original_checkpoint(tree, tmp_path, cli):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=CLASSES).state_dict(), path)
    sets = folder(tree, "image_size=32", "model=torchvision:resnet18",
                  f"original_checkpoint={path}", "train.epochs=1", "train.batch_size=32")
    out = run_json(cli, *sets)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["seconds"]["original"] == 0.0  # imported, not trained
    assert result["cached"]["original"] is False and result["seconds"]["retrained"] > 0
    name = result["checkpoints"]["original"].split("@")[0][:-3] + ".json"
    meta = json.loads((Path(os.environ["DIMALIGN_HOME"]) / "models" / name).read_text())
    assert meta["imported"] == str(path)
    # the original's test accuracy is that of the file's weights on the same test split
    cfg = build_config("digits-class", sets)
    exp = build_experiment(cfg)
    model = build_model(cfg.model_name, exp.info.channels, CLASSES, 32)
    model.load_state_dict(model.from_torchvision_state(torch.load(path, weights_only=True)))
    logits, _ = forward_all(model, exp.x_test, exp.info)
    acc = (logits.argmax(1) == exp.y_test).float().mean().item()
    assert result["models"]["original"]["acc_test"] == pytest.approx(acc, abs=1e-6)
    # the file's identity (path and sha256 of its bytes) is in the original's cache key; the
    # retrained model does not depend on it
    key = cache_key(cfg, "original")
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18(num_classes=CLASSES).state_dict(), path)
    changed = build_config("digits-class", sets)
    assert cache_key(changed, "original") != key
    assert cache_key(changed, "retrained") == cache_key(cfg, "retrained")


def one_line_error(code: int, stderr: str, key: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("dimalign:")]
    assert len(lines) == 1 and key in lines[0], stderr


def test_bad_checkpoint_is_one_line(tree, tmp_path, cli_process):
    bad = tmp_path / "bad.pt"
    torch.save({"not.a.layer": torch.zeros(3)}, bad)
    # its own process: the exit code and the one line on the real stderr are the contract
    sets = folder(tree, "model=torchvision:resnet18", f"original_checkpoint={bad}")
    out = cli_process("run", "--json", *[a for s in sets for a in ("--set", s)])
    one_line_error(out.returncode, out.stderr, "original_checkpoint")
    assert "not.a.layer" in out.stderr and "fc.weight" in out.stderr  # the first few keys


def test_errors_are_one_line(tree, tmp_path, capsys):
    """As test_bad_checkpoint_is_one_line, through cli.main in this process (faster)."""
    from dimalign.cli import main

    def run(*sets: str) -> tuple[int, str]:
        code = main(["run", "--json", *(a for s in sets for a in ("--set", s))])
        return code, capsys.readouterr().err

    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    (one / "only" / "a.png").write_bytes((tree / "digit0" / "000.png").read_bytes())
    one_line_error(*run(*folder(one)), "dataset_root")
    one_line_error(*run(*folder(tmp_path / "missing")), "dataset_root")
    one_line_error(*run(*folder(tree, "model=torchvision:not_a_model")), "model")
    one_line_error(*run(*folder(tree, "model=torchvision:squeezenet1_0")), "model")
    torch.save({"x": torch.zeros(2)}, tmp_path / "wrong.pt")
    for checkpoint in (tmp_path / "wrong.pt", tmp_path / "nope.pt", tree / "digit0" / "000.png"):
        one_line_error(*run(*folder(tree, f"original_checkpoint={checkpoint}")),
                       "original_checkpoint")


def test_config_errors_in_process(tree):
    with pytest.raises(ConfigError, match="dataset_root"):
        build_config("digits-class", ["dataset_root=/somewhere"])  # not dataset=imagefolder
    with pytest.raises(ConfigError, match="image_size"):
        build_config("digits-class", folder(tree, "image_size=2"))
    # defaults of the new keys stay out of to_dict: other configs keep their identity
    assert "dataset_root" not in build_config("digits-class").to_dict()
