"""GPU checks, run on a machine with CUDA: `make test-gpu`. Not part of `make test` (CI has no
GPU); here a missing GPU fails every test rather than skipping it."""

import os

import pytest
import torch

from dimalign import embed, geometry
from dimalign.config import build_config
from dimalign.data import build_experiment
from dimalign.features import forward_all
from dimalign.models import build_model
from dimalign.runner import run_experiment
from dimalign.train import train_classifier


@pytest.fixture(scope="session", autouse=True)
def gpu_home(tmp_path_factory):
    assert torch.cuda.is_available(), "no CUDA device: run these on a GPU machine"
    os.environ["DIMALIGN_HOME"] = str(tmp_path_factory.mktemp("gpu-home"))
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.expanduser("~/.dimalign/numba-cache"))


def test_features_on_the_gpu_match_the_cpu_within_bf16():
    cfg = build_config("digits-class")
    exp = build_experiment(cfg)
    torch.manual_seed(0)
    model = build_model("resnet18", 1, 10, 8).eval()
    logits_cpu, feats_cpu = forward_all(model, exp.x_test, exp.info)
    gpu = model.cuda().to(memory_format=torch.channels_last)
    logits_gpu, feats_gpu = forward_all(gpu, exp.x_test, exp.info)
    assert feats_gpu.device.type == "cpu" and feats_gpu.dtype == torch.float32
    rel = (feats_gpu - feats_cpu).norm() / feats_cpu.norm()
    assert rel < 0.03
    agree = (logits_gpu.argmax(1) == logits_cpu.argmax(1)).float().mean()
    assert agree > 0.95


def test_large_gram_eigendecompositions_run_on_the_gpu_and_match_float64_cpu(monkeypatch):
    feats = torch.randn(20000, 64, dtype=torch.float64) @ torch.randn(64, 64, dtype=torch.float64)
    monkeypatch.setattr(geometry, "GPU_FROM", 10**12)  # CPU reference
    cpu = geometry.top_basis(feats.float(), 0.9)
    monkeypatch.setattr(geometry, "GPU_FROM", 1)
    gpu = geometry.top_basis(feats.float(), 0.9)
    assert gpu.vectors.device.type == "cpu" and gpu.k == cpu.k
    torch.testing.assert_close(gpu.eigenvalues, cpu.eigenvalues, rtol=1e-6, atol=1e-6)
    on_device = geometry.eigenspectrum(feats.cuda())
    assert on_device.values.device.type == "cuda"


def test_training_on_the_gpu_uses_bf16_channels_last_and_learns():
    cfg = build_config("digits-class", ["train.epochs=5"])
    exp = build_experiment(cfg)
    model, seconds = train_classifier(cfg, exp.info, exp.x_train, exp.y_train,
                                      torch.device("cuda"), "original")
    assert next(model.parameters()).is_cuda and seconds > 0
    logits, _ = forward_all(model, exp.x_test, exp.info)
    assert (logits.argmax(1) == exp.y_test).float().mean() > 0.85


def test_muda_on_the_gpu_forgets_the_class():
    result = run_experiment(build_config("digits-class"), "muda", fresh=True)
    assert result["device"].startswith("cuda")
    unlearned = result["models"]["unlearned"]
    assert unlearned["acc_forget"] <= 0.05 and unlearned["acc_retain"] >= 0.95


def test_umap_takes_cuml_when_it_is_installed_else_umap_learn():
    chosen = embed.backend()
    assert chosen == ("cuml" if embed._cuml() is not None else "umap-learn")
    feats = torch.randn(300, 16)
    out = embed.aligned_embedding({"retrained": feats, "original": feats + 0.01})
    assert out["original"].shape == (300, 2)
