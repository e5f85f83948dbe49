"""ResNet-18 features of CIFAR-10's 60,000 images: `forward_all` against a plain fp32 loop.

Penultimate features (and logits) of ResNet-18 on CIFAR-10's 60,000 images: dimalign's
`forward_all` (images copied over once, bf16 + channels_last on CUDA, outputs gathered on the
device) against a plain fp32 loop over a DataLoader of normalised float tensors that copies
each batch's outputs back, in one run.

    .venv/bin/python -m bench features [--images N] [--runs 5]

Defaults: 60,000 images on a GPU, 500 on a CPU (a smoke run). Weights are untrained: speed
does not depend on them.
"""

from __future__ import annotations

import torch

from bench.common import cifar10_arrays, header, median, parser, timed
from dimalign.data import normalise
from dimalign.datasets import DATASETS
from dimalign.features import default_batch, forward_all
from dimalign.models import build_model
from dimalign.train import pick_device


@torch.inference_mode()
def plain(model, x: torch.Tensor, device, batch: int) -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch)
    feats = []
    for (xb,) in loader:
        feats.append(model.features(xb.to(device)).cpu())
    torch.cat(feats)


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=5)
    options.add_argument("--images", type=int)
    args = options.parse_args(argv)
    device = pick_device("auto")
    images = args.images or (60000 if device.type == "cuda" else 500)
    (x_tr, _, x_te, _), source = cifar10_arrays(min(images, 50000), max(0, images - 50000))
    x = torch.cat([x_tr, x_te])[:images]
    info = DATASETS["cifar10"]
    batch = default_batch(device)
    header("ResNet-18 features of CIFAR-10", {"device": device, "images": len(x),
                                              "batch": batch, "runs": args.runs,
                                              "data": source})
    model = build_model("resnet18", 3, 10, 32).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    floats = normalise(x, info)  # the plain loop's dataset: already normalised fp32
    forward_all(model, x[:batch], info)  # warm: cudnn autotuning, allocator
    plain(model, floats[:batch], device, batch)
    ours = [timed(lambda: forward_all(model, x, info)) for _ in range(args.runs)]
    base = [timed(lambda: plain(model, floats, device, batch)) for _ in range(args.runs)]
    for name, times in (("dimalign forward_all", ours), ("plain fp32 DataLoader loop", base)):
        print(f"{name:<28} median {median(times):.3f} s  ({len(x) / median(times):,.0f} img/s)"
              f"  runs {[round(t, 3) for t in times]}")
    print(f"speed-up vs plain: {median(base) / median(ours):.2f}x   "
          "target (H100): 60,000 images <= 2 s")
    return 0
