"""The film's linear view: every frame of a run's recorded features (`methods/film.py`) in one
frame of reference that means something (docs/method.md, "The film"). The worker places each
frame as it records it (`LinearFrame`); pages and the CLI only read the result.

- x and y: the starting model's (frame 0's) top two retain principal directions. The unlearned
  model starts from that model's weights, so its features move in that model's coordinates;
  fixed axes keep the film from jumping as later frames' eigenvectors turn or flip sign.
- z: the point's *residual*, the share of its norm outside the frame's own retain top-k
  eigenspace, 0 on the retain subspace, 1 orthogonal to it. k is fixed for the whole film: the
  retrained model's (by `eval.energy`, or `eval.k`), the size the target model's retain
  eigenspace has. A k re-chosen per frame would lift every retain point at once where it drops
  by one. Forgetting in MUDA's sense is forget points falling onto the retain plane.
- The ghosts (the original and retrained models): each is turned onto frame 0 by the orthogonal
  map that best carries its retain features onto frame 0's (Procrustes), so its points sit in
  the film's axes; its residual is its own, outside its own retain top-k eigenspace.
"""

from __future__ import annotations

import math

import torch

from dimalign.config import EvalConfig
from dimalign.geometry import DegenerateFeatures, top_basis
from dimalign.metrics import retain_basis

PROJECTION = ("linear: x, y = the starting model's top-2 retain directions; z = residual "
              "outside the frame's retain top-k eigenspace (k = the retrained model's)")


class LinearFrame:
    """Places frames (N, C) into the linear view: fixed axes from frame 0, fixed k."""

    def __init__(self, reference: torch.Tensor, retain: torch.Tensor, ev: EvalConfig):
        self.retain, self.center = retain, ev.center
        try:
            self.k = retain_basis(reference[retain], ev).k
        except DegenerateFeatures:
            self.k = 1
        self.axes: torch.Tensor | None = None  # (C, 2)

    def set_axes(self, first: torch.Tensor) -> None:
        self.axes = top_basis(first[self.retain], k=2).vectors

    def place(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        xy = feats @ self.axes
        return {"x": xy[:, 0].float(), "y": xy[:, 1].float(),
                "residual": residuals(feats, self.retain, self.k, self.center).float()}

    def place_ghost(self, feats: torch.Tensor, first: torch.Tensor) -> dict[str, torch.Tensor]:
        u, _, vh = torch.linalg.svd(feats[self.retain].T @ first[self.retain])
        return self.place(feats @ (u @ vh))  # turned onto frame 0 (residuals do not change)


def residuals(feats: torch.Tensor, retain: torch.Tensor, k: int, center: bool) -> torch.Tensor:
    """Each row's share of its norm outside the top-k eigenspace of its retain rows (NaN for
    every row when those span nothing)."""
    centre = feats[retain].mean(0, keepdim=True) if center else 0.0
    x = feats - centre
    try:
        basis = top_basis(x[retain], k=min(k, x.shape[1])).vectors
    except DegenerateFeatures:
        return torch.full((len(feats),), math.nan, dtype=feats.dtype)
    outside = x - (x @ basis) @ basis.T
    return outside.norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)


def arrays(bundle: dict) -> dict:
    """The film as compact plain data for drawing: per-frame arrays (frames x points), rounded
    to 4 decimals, NaN as None. "plane": what 2-D draws up the side ("residual" here; "xy"
    for an embedding's second axis, `film_umap.umap_arrays`)."""
    bundle = placed(bundle)
    view = bundle["view"]
    ghosts = {name: {**{k: _list(v) for k, v in bundle["ghost_view"][name].items()},
                     "confidence": _list(g["confidence"].float()),
                     "predicted": _ints(g.get("predicted"))}
              for name, g in bundle.get("ghosts", {}).items()}
    return {"projection": PROJECTION, "k": bundle.get("k"), "steps": list(bundle["steps"]),
            "phases": list(bundle["phases"]), "ids": list(range(len(bundle["splits"]))),
            "rows": list(bundle["rows"]), "splits": list(bundle["splits"]),
            "labels": list(bundle["labels"]), "x": _list(view["x"]), "y": _list(view["y"]),
            "residual": _list(view["residual"]),
            "confidence": _list(bundle["confidence"].float()),
            "predicted": _ints(bundle.get("predicted")), "ghosts": ghosts, "plane": "residual",
            "total": bundle.get("total"), "complete": bundle.get("complete", True),
            "pending": list(bundle.get("pending", []))}


def placed(bundle: dict) -> dict:
    """A film recorded before frames were placed as they were taken (no "view"), placed now
    as the worker places them, with the default `eval` settings it did not record; a film
    already placed, as it is."""
    if "view" in bundle:
        return bundle
    feats, ghosts = bundle["features"].double(), bundle.get("ghosts") or {}
    retain = torch.tensor([s == "retain" for s in bundle["splits"]])
    reference = ghosts.get("retrained", ghosts.get("original"))
    frame = LinearFrame(feats[0] if reference is None else reference["features"].double(),
                        retain, EvalConfig())
    frame.set_axes(feats[0])
    views = [frame.place(f) for f in feats]
    return {**bundle, "k": frame.k,
            "view": {k: torch.stack([v[k] for v in views]) for k in views[0]},
            "ghost_view": {name: frame.place_ghost(g["features"].double(), feats[0])
                           for name, g in ghosts.items()}}


def linear_view(bundle: dict) -> dict:
    """The film as plain data: {"projection", "k", "frames": [{"step", "phase", "points": [{"id",
    "row", "split", "label", "x", "y", "z", "residual", "confidence"}]}], "ghosts": {model:
    [points]}}."""
    return view_of(arrays(bundle))


def view_of(a: dict) -> dict:
    """`arrays`' compact form (or `film_umap.umap_arrays`') as points per frame."""

    def points(x, y, residual, confidence) -> list[dict]:
        return [{"id": i, "row": a["rows"][i], "split": a["splits"][i], "label": a["labels"][i],
                 "x": x[i], "y": y[i], "z": residual[i], "residual": residual[i],
                 "confidence": confidence[i]} for i in a["ids"]]

    frames = [{"step": step, "phase": phase,
               "points": points(a["x"][t], a["y"][t], a["residual"][t], a["confidence"][t])}
              for t, (step, phase) in enumerate(zip(a["steps"], a["phases"], strict=True))]
    ghosts = {name: points(g["x"], g["y"], g["residual"], g["confidence"])
              for name, g in a["ghosts"].items()}
    return {"projection": a["projection"], "k": a["k"], "frames": frames, "ghosts": ghosts}


def mean_residual(view: dict, split: str) -> list[float]:
    """The mean residual of one split in each frame: how far it lies off the retain plane."""
    out = []
    for frame in view["frames"]:
        values = [p["residual"] for p in frame["points"]
                  if p["split"] == split and p["residual"] is not None]
        out.append(sum(values) / len(values) if values else math.nan)
    return out


def _ints(t: torch.Tensor | None) -> list | None:
    return None if t is None else t.tolist()  # films recorded before predictions have none


def _list(t: torch.Tensor) -> list:
    return [_list(row) for row in t] if t.dim() > 1 else [
        round(v, 4) if math.isfinite(v) else None for v in t.tolist()]
