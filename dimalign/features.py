"""Batched inference: logits and penultimate features of a model on uint8 images."""

from __future__ import annotations

import torch

from dimalign.data import normalise
from dimalign.datasets import DatasetInfo
from dimalign.models import Classifier

RESIDENT_BYTES = 2 << 30  # uint8 inputs up to this size are copied to the GPU in one go


def default_batch(device: torch.device) -> int:
    return 4096 if device.type == "cuda" else 2048


@torch.inference_mode()
def forward_all(model: Classifier, x: torch.Tensor, info: DatasetInfo,
                batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (logits (N, K), features (N, C)) as float32 on the CPU; x is uint8 (N, C, H, W).

    On a GPU the images are copied over once and the outputs gathered there, so the device
    never waits on a per-batch copy back (one synchronisation at the end)."""
    device = next(model.parameters()).device
    batch_size = batch_size or default_batch(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
    if cuda and x.device != device and x.nelement() * x.element_size() <= RESIDENT_BYTES:
        x = x.to(device, non_blocking=True)
    was_training = model.training
    model.eval()
    logits, feats = [], []
    for start in range(0, len(x), batch_size):
        xb = normalise(x[start:start + batch_size].to(device, non_blocking=True), info)
        if cuda:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            f = model.features(xb)
            out = model.head(f)
        feats.append(f.float())
        logits.append(out.float())
    model.train(was_training)
    if not feats:
        return torch.empty(0, model.head.out_features), torch.empty(0, model.feature_dim)
    return torch.cat(logits).cpu(), torch.cat(feats).cpu()
