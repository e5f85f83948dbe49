"""Figure builders (plotly and image arrays). No streamlit here: pages only display."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch


def image_montage(x: torch.Tensor, ncols: int = 10, pad: int = 1) -> np.ndarray:
    """uint8 images (N, C, H, W) -> one (rows*H, ncols*W, 3) uint8 grid, white gaps between."""
    n, c, h, w = x.shape
    rows = max(1, -(-n // ncols))
    grid = np.full((rows * (h + pad), ncols * (w + pad), 3), 255, dtype=np.uint8)
    imgs = x.permute(0, 2, 3, 1).numpy()
    if c == 1:
        imgs = np.repeat(255 - imgs, 3, axis=3)  # dark strokes on white read best
    for i, img in enumerate(imgs):
        r, col = divmod(i, ncols)
        grid[r * (h + pad): r * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = img
    return grid


def split_sizes(summary: dict) -> go.Figure:
    """Bar chart of retain / forget / test sizes."""
    names = ["retain", "forget", "test"]
    fig = go.Figure(go.Bar(x=names, y=[summary[k] for k in names],
                           marker_color=["#4C78A8", "#E45756", "#9D9D9D"],
                           text=[summary[k] for k in names], textposition="auto"))
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), title="Samples per split")
    return fig
