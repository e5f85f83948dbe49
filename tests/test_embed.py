"""Aligned UMAP: one frame for every model, the backend choice, and the kernel warm-up."""

import numpy as np
import pytest
import torch

from dimalign import embed
from dimalign.scheduler import Scheduler
from dimalign.store import Store


def clusters(n=300, classes=5, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 6
    labels = torch.arange(n) % classes
    return centres[labels] + torch.randn(n, dim, generator=gen), labels


def knn_agreement(xy: np.ndarray, labels: torch.Tensor) -> float:
    """Share of points whose nearest other point in 2-D has the same label."""
    d = torch.cdist(torch.from_numpy(xy), torch.from_numpy(xy))
    d.fill_diagonal_(float("inf"))
    return (labels[d.argmin(1)] == labels).float().mean().item()


@pytest.fixture(scope="module")
def frame():
    feats, labels = clusters()
    gen = torch.Generator().manual_seed(1)
    scrambled = feats[torch.randperm(len(feats), generator=gen)]  # right shape, wrong samples
    out = embed.aligned_embedding({"retrained": feats, "original": feats.clone(),
                                   "scrambled": scrambled}, seed=0)
    return out, labels


def test_every_model_gets_one_point_per_sample_and_classes_stay_apart(frame):
    out, labels = frame
    assert set(out) == {"retrained", "original", "scrambled"}
    for xy in out.values():
        assert xy.shape == (len(labels), 2) and xy.dtype == np.float32
        assert np.isfinite(xy).all()
    assert knn_agreement(out["retrained"], labels) > 0.95


def test_the_same_features_land_where_the_reference_put_them(frame):
    """Transforming identical features reproduces the fitted positions (relative to the frame's
    size); scrambled rows land elsewhere — so positions are comparable across models."""
    out, _ = frame
    spread = np.ptp(out["retrained"], axis=0).max()
    same = np.linalg.norm(out["original"] - out["retrained"], axis=1)
    other = np.linalg.norm(out["scrambled"] - out["retrained"], axis=1)
    assert np.median(same) < 0.05 * spread
    assert np.median(other) > 5 * np.median(same) + 0.05 * spread


def test_embedding_is_reproducible_for_a_seed():
    feats, _ = clusters(n=120)
    a = embed.aligned_embedding({"retrained": feats}, seed=3)["retrained"]
    b = embed.aligned_embedding({"retrained": feats}, seed=3)["retrained"]
    np.testing.assert_allclose(a, b)


def test_bad_sizes_and_backends_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="at least 5"):
        embed.aligned_embedding({"retrained": torch.randn(4, 3)})
    with pytest.raises(ValueError, match="DIMALIGN_UMAP"):
        embed.backend("tsne")
    monkeypatch.setattr(embed, "_cuml", lambda: None)  # as on any machine without RAPIDS
    with pytest.raises(RuntimeError, match="cuML is not installed"):
        embed.backend("cuml")
    assert embed.backend("auto") == "umap-learn"
    monkeypatch.setenv("DIMALIGN_UMAP", "umap-learn")
    assert embed.backend() == "umap-learn"


def test_the_scheduler_warms_umap_once_in_a_background_process():
    marker = embed.warm_marker()
    marker.unlink(missing_ok=True)
    store = Store()
    scheduler = Scheduler(store, slots=[])
    process = scheduler.warm_umap()
    assert process is not None
    process.join(300)
    assert process.exitcode == 0 and embed.is_warm()
    assert scheduler.warm_umap() is None  # warm: nothing started again
    store.close()
