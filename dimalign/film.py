"""The film's linear view: every frame of a run's recorded features (`methods/film.py`) in one
frame of reference that means something (docs/method.md, "The film").

- x and y: the starting model's (frame 0's) top two retain principal directions. The unlearned
  model starts from that model's weights, so its features move in that model's coordinates;
  fixed axes keep the film from jumping as later frames' eigenvectors turn or flip sign.
- z: the point's *residual*, the share of its norm outside the frame's own retain top-k
  eigenspace (k by `eval.energy` or `eval.k`, as DA takes it): 0 on the retain subspace, 1
  orthogonal to it. Forgetting in MUDA's sense is points falling onto the retain plane.
"""

from __future__ import annotations

import math

import torch

from dimalign.config import EvalConfig
from dimalign.geometry import DegenerateFeatures, top_basis
from dimalign.metrics import retain_basis

PROJECTION = "linear: x, y = the starting model's top-2 retain directions; z = residual"


def residuals(feats: torch.Tensor, retain: torch.Tensor, ev: EvalConfig) -> torch.Tensor:
    """Each row's share of its norm outside the retain top-k eigenspace of `retain` (NaN for
    every row when the retain features span nothing)."""
    try:
        basis = retain_basis(retain, ev).vectors
    except DegenerateFeatures:
        return torch.full((len(feats),), math.nan)
    centre = retain.mean(0, keepdim=True) if ev.center else 0.0
    x = feats - centre
    outside = x - (x @ basis) @ basis.T
    return outside.norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)


def linear_view(bundle: dict, ev: EvalConfig) -> dict:
    """The film as plain data: {"projection", "frames": [{"step", "phase", "points": [{"id",
    "row", "split", "label", "x", "y", "z", "residual", "confidence"}]}]}."""
    feats = bundle["features"].double()  # (frames, N, C)
    retain = torch.tensor([s == "retain" for s in bundle["splits"]])
    axes = top_basis(feats[0][retain], k=2).vectors  # (C, 2)
    frames = []
    for t, frame in enumerate(feats):
        xy = frame @ axes
        z = residuals(frame, frame[retain], ev)
        confidence = bundle["confidence"][t].float()
        points = [{"id": i, "row": bundle["rows"][i], "split": bundle["splits"][i],
                   "label": bundle["labels"][i], "x": _num(xy[i, 0]), "y": _num(xy[i, 1]),
                   "z": _num(z[i]), "residual": _num(z[i]), "confidence": _num(confidence[i])}
                  for i in range(len(bundle["splits"]))]
        frames.append({"step": bundle["steps"][t], "phase": bundle["phases"][t],
                       "points": points})
    return {"projection": PROJECTION, "frames": frames}


def mean_residual(view: dict, split: str) -> list[float]:
    """The mean residual of one split in each frame: how far it lies off the retain plane."""
    out = []
    for frame in view["frames"]:
        values = [p["residual"] for p in frame["points"]
                  if p["split"] == split and p["residual"] is not None]
        out.append(sum(values) / len(values) if values else math.nan)
    return out


def _num(value: torch.Tensor) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None
