"""Median time to train both digits models (original on D, retrained on D_r), against a plain
fp32 DataLoader loop of the same model, epochs and batch size run in the same process.

    .venv/bin/python bench/train_cpu.py [--runs 3] [--preset digits-class]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, median, timed  # noqa: E402

from dimalign.config import build_config  # noqa: E402
from dimalign.data import build_experiment, normalise  # noqa: E402
from dimalign.models import build_model  # noqa: E402
from dimalign.train import pick_device, train_classifier  # noqa: E402


def plain_loop(cfg, exp, x, y) -> None:
    """The textbook loop: float tensors in a DataLoader, no augmentation, constant lr."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model_name, exp.info.channels, exp.info.num_classes,
                        exp.info.size)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                          weight_decay=cfg.train.weight_decay)
    loader = DataLoader(TensorDataset(normalise(x, exp.info), y), batch_size=cfg.train.batch_size,
                        shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(cfg.train.epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--preset", default="digits-class")
    args = parser.parse_args()
    cfg = build_config(args.preset)
    exp = build_experiment(cfg)
    device = pick_device(cfg.device)
    header("train both baselines", {"preset": args.preset, "epochs": cfg.train.epochs,
                                    "batch": cfg.train.batch_size, "device": device,
                                    "runs": args.runs})
    keep = exp.retain_idx
    sets = {"original": (exp.x_train, exp.y_train),
            "retrained": (exp.x_train[keep], exp.y_train[keep])}
    ours, plain = [], []
    for _ in range(args.runs):
        ours.append(sum(train_classifier(cfg, exp.info, x, y, device, r)[1]
                        for r, (x, y) in sets.items()))
        plain.append(sum(timed(lambda x=x, y=y: plain_loop(cfg, exp, x, y))
                         for x, y in sets.values()))
    for name, times in (("dimalign loop", ours), ("plain DataLoader loop", plain)):
        print(f"{name:<22} both models: median {median(times):.2f} s  "
              f"runs {[round(t, 2) for t in times]}")
    print(f"ratio dimalign / plain: {median(ours) / median(plain):.2f}")


if __name__ == "__main__":
    main()
