"""Aligned UMAP manifolds: one 2-D frame for the original, retrained and unlearned models.

UMAP is fitted once, on the retrained model's features of a fixed seeded subsample, and the
same samples' features of every other model are placed into that frame with `transform` — so
positions are comparable across models. Runs in a worker (numba compiles on first use; keep a
persistent NUMBA_CACHE_DIR), never in the Streamlit script thread.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from dimalign import paths

REFERENCE = "retrained"


def _numba_cache() -> None:
    os.environ.setdefault("NUMBA_CACHE_DIR", str(paths.home() / "numba-cache"))


def aligned_embedding(features: dict[str, torch.Tensor], seed: int = 0,
                      n_neighbors: int = 15) -> dict[str, np.ndarray]:
    """features: model -> (N, C) features of the same N samples. Returns model -> (N, 2)."""
    _numba_cache()
    try:
        import umap
    except ImportError:
        raise RuntimeError("UMAP needs umap-learn: pip install umap-learn") from None
    reference = REFERENCE if REFERENCE in features else next(iter(features))
    n = len(features[reference])
    if n < 5:
        raise ValueError(f"UMAP needs at least 5 samples, got {n}")
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), random_state=seed,
                        n_components=2, init="spectral" if n > 20 else "random")
    out = {reference: reducer.fit_transform(features[reference].numpy())}
    for name, feats in features.items():
        if name != reference:
            out[name] = reducer.transform(feats.numpy())
    return {k: v.astype(np.float32) for k, v in out.items()}


def embed_run(geometry: dict, samples: int, seed: int = 0) -> dict:
    """The aligned embedding of up to `samples` points (split evenly over retain, forget and
    test, the same rows for every model) from a run's geometry bundle."""
    splits = ("retain", "forget", "test")
    per_split = max(1, samples // len(splits))
    gen = torch.Generator().manual_seed(seed)
    picks = {s: torch.randperm(len(geometry["rows"][s]), generator=gen)[:per_split].sort()[0]
             for s in splits}
    models = geometry["models"]
    feats = {m: torch.cat([models[m]["features"][s][picks[s]] for s in splits]) for m in models}
    coords = aligned_embedding(feats, seed)
    return {
        "coords": {m: torch.from_numpy(c) for m, c in coords.items()},
        "split": sum(([s] * len(picks[s]) for s in splits), []),
        "rows": torch.cat([geometry["rows"][s][picks[s]] for s in splits]),
        "labels": torch.cat([geometry["labels"][s][picks[s]] for s in splits]),
        "predictions": {m: torch.cat([models[m]["predictions"][s][picks[s]] for s in splits])
                        for m in models},
        "reference": REFERENCE if REFERENCE in coords else next(iter(coords)),
        "samples": samples,
    }
