"""Aligned UMAP manifolds: one 2-D frame for the original, retrained and unlearned models.

UMAP is fitted once, on the retrained model's features of a fixed seeded subsample, and the
same samples' features of every other model are placed into that frame with `transform` — so
positions are comparable across models. Runs in a worker, never in the Streamlit script thread.

Speed on a CPU: distances are computed with torch and handed to UMAP as a precomputed matrix
(umap-learn's small-data path otherwise calls a Python metric once per pair, ~15 s for 2,000
points), and umap-learn's numba kernels are cached in a persistent NUMBA_CACHE_DIR (most are
not cached by default, so every fresh worker would compile them again, ~25 s on 2 cores).
On a GPU, cuML's UMAP is used when it is installed.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from dimalign import paths
from dimalign.run_files import GEOMETRY

REFERENCE = "retrained"
MIN_SAMPLES = 6  # embed_run takes a third of the samples from each split; UMAP needs 5 points
MAX_POINTS = 10_000  # the dense distance matrix is N x N float32 (400 MB at this size)
# umap-learn's own default for more than 10,000 points; for fewer it takes 500, which on 2
# cores makes the layout (fit, then a third as many epochs per transform) 2.5x slower for
# frames that look the same at the dashboard's sizes
EPOCHS = 200
BACKENDS = ("auto", "cuml", "umap-learn")


def numba_cache_dir() -> Path:
    """Where numba keeps compiled kernels; set before numba is first imported."""
    return Path(os.environ.setdefault("NUMBA_CACHE_DIR", str(paths.home() / "numba-cache")))


def backend(choice: str | None = None) -> str:
    """`DIMALIGN_UMAP` (auto | cuml | umap-learn): auto takes cuML on a GPU when installed."""
    choice = choice or os.environ.get("DIMALIGN_UMAP", "auto")
    if choice not in BACKENDS:
        raise ValueError(f"DIMALIGN_UMAP={choice!r}: choose one of {', '.join(BACKENDS)}")
    has_cuml = _cuml() is not None
    if choice == "cuml" and not has_cuml:
        raise RuntimeError("DIMALIGN_UMAP=cuml, but cuML is not installed (it needs a CUDA "
                           "GPU; see docs.rapids.ai/install), or use umap-learn")
    if choice == "auto":
        return "cuml" if has_cuml and torch.cuda.is_available() else "umap-learn"
    return choice


def _cuml():
    try:
        from cuml.manifold import UMAP
    except ImportError:
        return None
    return UMAP


def _umap_learn():
    numba_cache_dir()
    try:
        import umap
        import umap.layouts
        import umap.umap_
        import umap.utils
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        raise RuntimeError("UMAP needs umap-learn: pip install umap-learn") from None
    for module in (umap.umap_, umap.layouts, umap.utils):
        for kernel in vars(module).values():
            if isinstance(kernel, Dispatcher) and isinstance(kernel._cache, NullCache):
                kernel.enable_caching()
    return umap.UMAP


def _distances(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.cdist(a.double(), b.double()).clamp_min(0).float().numpy()


class AlignedFrame:
    """UMAP fitted once on `reference` (N, C) features; `place` puts other features of the
    same samples or kind into that frame with `transform`. `fitted`: the reference's own (N, 2)
    positions; `backend`: which UMAP ran (`backend`)."""

    def __init__(self, reference: torch.Tensor, seed: int = 0, n_neighbors: int = 15,
                 use: str | None = None):
        n = len(reference)
        if n < 5:
            raise ValueError(f"UMAP needs at least 5 samples, got {n}")
        if n > MAX_POINTS:
            raise ValueError(f"UMAP of {n} points: at most {MAX_POINTS} are supported")
        kw = dict(n_neighbors=min(n_neighbors, n - 1), n_components=2, random_state=seed,
                  n_epochs=EPOCHS, init="spectral" if n > 20 else "random")
        self.backend, self.reference = backend(use), reference
        if self.backend == "cuml":
            self.reducer = _cuml()(**kw)
            self.fitted = _points(self.reducer.fit_transform(reference.float().cuda()))
        else:
            self.reducer = _umap_learn()(metric="precomputed", **kw)
            with _quiet():
                self.fitted = _points(self.reducer.fit_transform(_distances(reference,
                                                                            reference)))

    def place(self, features: torch.Tensor) -> np.ndarray:
        """(M, C) features -> their (M, 2) positions in the fitted frame."""
        if self.backend == "cuml":
            return _points(self.reducer.transform(features.float().cuda()))
        with _quiet():
            return _points(self.reducer.transform(_distances(features, self.reference)))


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():  # the seed (serial layout) and precomputed: both meant
        warnings.filterwarnings("ignore", message=".*(n_jobs|precomputed metric).*")
        yield


def _points(xy) -> np.ndarray:
    return np.asarray(xy.get() if hasattr(xy, "get") else xy, dtype=np.float32)  # cuML: cupy


def aligned_embedding(features: dict[str, torch.Tensor], seed: int = 0, n_neighbors: int = 15,
                      use: str | None = None) -> dict[str, np.ndarray]:
    """features: model -> (N, C) features of the same N samples. Returns model -> (N, 2)."""
    reference = REFERENCE if REFERENCE in features else next(iter(features))
    frame = AlignedFrame(features[reference], seed, n_neighbors, use)
    return {reference: frame.fitted} | {m: frame.place(f) for m, f in features.items()
                                        if m != reference}


def warm_marker() -> Path:
    from importlib.metadata import version

    return numba_cache_dir() / f"dimalign-umap-learn-{version('umap-learn')}.warm"


def is_warm() -> bool:
    """Whether umap-learn's kernels are compiled in NUMBA_CACHE_DIR (a cheap file check)."""
    return warm_marker().exists()


def warm_up() -> None:
    """Compile (or load from NUMBA_CACHE_DIR) every kernel an embedding uses, on random data,
    then leave a marker so the scheduler does not start this again."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 8, generator=gen)
    aligned_embedding({REFERENCE: feats, "other": feats + 0.1}, use="umap-learn")
    warm_marker().parent.mkdir(parents=True, exist_ok=True)
    warm_marker().touch()


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
    used = backend()
    coords = aligned_embedding(feats, seed, use=used)
    return {
        "coords": {m: torch.from_numpy(c) for m, c in coords.items()},
        "split": sum(([s] * len(picks[s]) for s in splits), []),
        "rows": torch.cat([geometry["rows"][s][picks[s]] for s in splits]),
        "labels": torch.cat([geometry["labels"][s][picks[s]] for s in splits]),
        "predictions": {m: torch.cat([models[m]["predictions"][s][picks[s]] for s in splits])
                        for m in models},
        "reference": REFERENCE if REFERENCE in coords else next(iter(coords)),
        "samples": samples,
        "backend": used,
    }


def embedding_path(run_folder: Path, samples: int) -> Path:
    return Path(run_folder) / f"embedding-{int(samples)}.pt"


def embed_saved_run(run_folder: Path, samples: int) -> tuple[Path, dict]:
    """The aligned embedding of a finished run's saved features, written beside them (the file
    the Manifolds page reads). Returns (its path, the embedding)."""
    from dimalign.artifacts import load_bundle, save_bundle

    bundle = embed_run(load_bundle(Path(run_folder) / GEOMETRY), samples)
    path = embedding_path(run_folder, samples)
    save_bundle(bundle, path)
    return path, bundle
