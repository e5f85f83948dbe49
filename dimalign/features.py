"""Batched inference: logits and penultimate features of a model on uint8 images."""

from __future__ import annotations

import torch

from dimalign.data import normalise
from dimalign.datasets import DatasetInfo
from dimalign.models import Classifier


@torch.inference_mode()
def forward_all(model: Classifier, x: torch.Tensor, info: DatasetInfo,
                batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (logits (N, K), features (N, C)) as float32 on the CPU; x is uint8 (N, C, H, W)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, feats = [], []
    for start in range(0, len(x), batch_size):
        xb = normalise(x[start:start + batch_size].to(device, non_blocking=True), info)
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            f = model.features(xb)
            out = model.head(f)
        feats.append(f.float().cpu())
        logits.append(out.float().cpu())
    model.train(was_training)
    if not feats:
        return torch.empty(0, model.head.out_features), torch.empty(0, model.feature_dim)
    return torch.cat(logits), torch.cat(feats)

