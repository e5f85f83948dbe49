"""Time to train both digits baselines against a plain fp32 DataLoader loop.

Median time to train both digits models (original on D, retrained on D_r), against a plain
fp32 DataLoader loop of the same model, epochs and batch size run in the same process.

    .venv/bin/python -m bench train_cpu [--runs 3] [--preset digits-class]
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.common import header, median, parser, timed
from dimalign.config import build_config
from dimalign.data import build_experiment, normalise
from dimalign.models import build_model
from dimalign.train import pick_device, train_classifier


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


def main(argv: list[str] | None = None) -> int:
    args = parser(__name__, runs=3, preset="digits-class").parse_args(argv)
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
    return 0
