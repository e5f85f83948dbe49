"""ResNet-18 CIFAR-10 training throughput (img/s): dimalign's loop against the textbook loop.

ResNet-18 training throughput (images/s) on CIFAR-10: dimalign's loop (uint8 data resident
on the device, augmentation there, bf16 autocast and channels_last on CUDA; optionally
torch.compile) against the textbook loop — fp32, torchvision transforms on PIL images in a
DataLoader with worker processes — same model, batch, epochs and data, in one run.

    .venv/bin/python -m bench gpu_train [--images N] [--epochs 2] [--batch 512] [--runs 3]
                                        [--compile] [--workers 8]

Defaults: all 50,000 training images on a GPU; 512 images on a CPU (a smoke run: the figures
that matter are the GPU ones). CIFAR-10 is read from $DIMALIGN_HOME/data when it is there,
else CIFAR-shaped synthetic data is used (the header says which).
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from bench.common import cifar10_arrays, header, median, parser
from dimalign.config import build_config
from dimalign.datasets import DATASETS
from dimalign.models import build_model
from dimalign.train import pick_device, train_classifier


class PilCifar(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: a PIL image through the transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x.permute(0, 2, 3, 1).numpy(), y.tolist(), transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def plain_loop(cfg, x, y, device, epochs: int, workers: int) -> float:
    """fp32, DataLoader with worker processes and pinned memory; returns seconds of training."""
    import torchvision.transforms as T

    info = DATASETS["cifar10"]
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(info.mean, info.std)])
    loader = torch.utils.data.DataLoader(
        PilCifar(x, y, transform), batch_size=cfg.train.batch_size, shuffle=True,
        num_workers=workers, pin_memory=device.type == "cuda", drop_last=False,
        persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 10, 32).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    next(iter(loader))  # workers started before the clock, as dimalign's warm-up is excluded
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=3)
    options.add_argument("--images", type=int)
    options.add_argument("--epochs", type=int)
    options.add_argument("--batch", type=int, default=512)
    options.add_argument("--compile", action="store_true", help="also time train.compile=true")
    options.add_argument("--workers", type=int, default=min(8, (os.cpu_count() or 2) - 1))
    args = options.parse_args(argv)
    device = pick_device("auto")
    gpu = device.type == "cuda"
    images = args.images or (50000 if gpu else 512)
    epochs = args.epochs or (2 if gpu else 1)
    (x, y, _, _), source = cifar10_arrays(images, 1000)
    header("ResNet-18 CIFAR-10 training throughput",
           {"device": device, "images": len(y), "epochs": epochs, "batch": args.batch,
            "runs": args.runs, "data": source, "plain loop workers": args.workers})
    overrides = [f"train.epochs={epochs}", f"train.batch_size={args.batch}"]
    variants = {"dimalign loop": build_config("cifar10-class", overrides)}
    if args.compile:
        variants["dimalign loop + torch.compile"] = build_config(
            "cifar10-class", [*overrides, "train.compile=true"])
    info = DATASETS["cifar10"]
    seen = len(y) * epochs
    rates: dict[str, list[float]] = {name: [] for name in [*variants, "plain fp32 DataLoader"]}
    for _ in range(args.runs):
        for name, cfg in variants.items():
            rates[name].append(seen / train_classifier(cfg, info, x, y, device, "bench")[1])
        rates["plain fp32 DataLoader"].append(
            seen / plain_loop(variants["dimalign loop"], x, y, device, epochs, args.workers))
    plain = median(rates["plain fp32 DataLoader"])
    print(f"{'loop':<32}{'median img/s':>14}{'/ plain':>9}  runs")
    for name, values in rates.items():
        print(f"{name:<32}{median(values):>14,.0f}{median(values) / plain:>9.2f}  "
              f"{[round(v) for v in values]}")
    if args.compile:
        print("(torch.compile's one-time compilation falls in the first run of that row)")
    print("targets (H100): >= 35,000 img/s in bf16 and >= 5x the plain fp32 DataLoader loop")
    return 0
