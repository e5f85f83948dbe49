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


CURVE_GROUPS = (
    ("Loss terms", lambda k: k.startswith("loss_")),
    ("Accuracy on fixed subsets", lambda k: k in ("acc_retain", "acc_forget", "acc_test")),
    ("Dimensional Alignment (forget vs retain)", lambda k: k == "da"),
    ("Smallest principal angles (degrees)", lambda k: k.startswith("angle_")),
)


def telemetry_figure(curves: dict[str, list[tuple[int, float]]],
                     references: dict[str, dict[str, float]] | None = None) -> go.Figure:
    """A run's live curves in four panels; `references` draws e.g. the retrained and original
    models' values ({"retrained": {"acc_forget": 0.0, "da": 0.97}, ...}) as dashed lines."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, subplot_titles=[g[0] for g in CURVE_GROUPS],
                        horizontal_spacing=0.08, vertical_spacing=0.14)
    dashes = {"retrained": "dash", "original": "dot"}
    for i, (_, wanted) in enumerate(CURVE_GROUPS):
        row, col = divmod(i, 2)
        for key in sorted(k for k in curves if wanted(k)):
            steps, values = zip(*curves[key], strict=True) if curves[key] else ((), ())
            fig.add_trace(go.Scatter(x=list(steps), y=list(values), mode="lines+markers",
                                     name=key.removeprefix("loss_"), legendgroup=str(i)),
                          row=row + 1, col=col + 1)
            for ref, values_by_key in (references or {}).items():
                if key in values_by_key and values_by_key[key] is not None:
                    fig.add_hline(y=values_by_key[key], line_dash=dashes.get(ref, "dash"),
                                  line_width=1, annotation_text=f"{ref} {key}",
                                  annotation_font_size=9, row=row + 1, col=col + 1)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=620, margin=dict(l=40, r=20, t=50, b=40))
    return fig


def spectra_figure(geometry: dict, split: str = "forget", centered: bool = False) -> go.Figure:
    """Normalised eigenspectra (log scale) of one split's features, one line per model."""
    fig = go.Figure()
    kind = "centered" if centered else "plain"
    for name, g in geometry["models"].items():
        values = g["spectra"][split][kind]
        if values is None:
            continue
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values.tolist(),
                                 mode="lines", name=name))
    fig.update_layout(title=f"Eigenspectrum of {split} features ({kind})", yaxis_type="log",
                      xaxis_title="eigenvalue index", yaxis_title="share of energy", height=380)
    return fig
