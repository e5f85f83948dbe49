"""Figure builders (plotly and image arrays). No streamlit here: pages only display."""

from __future__ import annotations

import numpy as np
import pandas  # noqa: F401 - see below
import plotly.graph_objects as go
import torch

# plotly imports pandas lazily, inside the first figure it builds. In the app, two script
# threads (a page and a live fragment) can build their first figures at the same moment and
# one of them then sees a half-initialised pandas module; importing it here, once, avoids that.


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


MODEL_COLOURS = {"original": "#E45756", "retrained": "#4C78A8", "unlearned": "#54A24B"}


def cumulative_figure(geometry: dict, split: str, energy: float,
                      centered: bool = False) -> tuple[go.Figure, dict[str, int]]:
    """Cumulative energy of each model's spectrum, the `energy` line and the k it selects."""
    fig, ks = go.Figure(), {}
    kind = "centered" if centered else "plain"
    for name, g in geometry["models"].items():
        values = g["spectra"][split][kind]
        if values is None:
            continue
        cumulative = values.double().cumsum(0)
        ks[name] = int((cumulative < energy - 1e-12).sum().item()) + 1
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=cumulative.tolist(),
                                 mode="lines", name=f"{name} (k={ks[name]})",
                                 line_color=MODEL_COLOURS.get(name)))
        fig.add_vline(x=ks[name], line_dash="dot", line_color=MODEL_COLOURS.get(name))
    fig.add_hline(y=energy, line_dash="dash", annotation_text=f"energy {energy:.2f}")
    fig.update_layout(title=f"Cumulative energy, {split} features", xaxis_type="log",
                      xaxis_title="number of eigenvectors k", yaxis_title="energy held",
                      height=360, yaxis_range=[0, 1.02])
    return fig, ks


def spectra_grid(geometry: dict, centered: bool = False) -> go.Figure:
    """Normalised spectra (log scale) for retain, forget and test, one panel each."""
    from plotly.subplots import make_subplots

    splits = ("retain", "forget", "test")
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"{s} features" for s in splits],
                        shared_yaxes=True)
    kind = "centered" if centered else "plain"
    for col, split in enumerate(splits, start=1):
        for name, g in geometry["models"].items():
            values = g["spectra"][split][kind]
            if values is None:
                continue
            fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values.tolist(),
                                     mode="lines", name=name, legendgroup=name,
                                     showlegend=col == 1, line_color=MODEL_COLOURS.get(name)),
                          row=1, col=col)
    fig.update_yaxes(type="log", title_text="share of energy", col=1)
    fig.update_yaxes(type="log")
    fig.update_xaxes(title_text="eigenvalue index")
    fig.update_layout(height=380, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def angles_figure(geometry: dict) -> go.Figure:
    """Principal angles between the forget and retain subspaces, per model."""
    fig = go.Figure()
    for name, g in geometry["models"].items():
        angles = g["angles"].tolist()
        fig.add_trace(go.Scatter(x=list(range(1, len(angles) + 1)), y=angles,
                                 mode="lines+markers", name=f"{name} (DA {g['da']:.3f})",
                                 line_color=MODEL_COLOURS.get(name)))
    fig.update_layout(title="Principal angles: forget subspace vs retain subspace",
                      xaxis_title="index (smallest first)", yaxis_title="degrees",
                      yaxis_range=[0, 92], height=380)
    return fig


def manifold_figure(embedding: dict, forget_label: str = "forget") -> go.Figure:
    """Side-by-side UMAPs in one aligned frame: colour = class, forget points as crosses."""
    from plotly.subplots import make_subplots

    models = [m for m in ("original", "retrained", "unlearned") if m in embedding["coords"]]
    fig = make_subplots(rows=1, cols=len(models), subplot_titles=models,
                        horizontal_spacing=0.03)
    labels = embedding["labels"].tolist()
    splits = embedding["split"]
    classes = sorted(set(labels))
    palette = ["#4C78A8", "#F58518", "#E45756", "#72B7B2", "#54A24B", "#EECA3B", "#B279A2",
               "#FF9DA6", "#9D755D", "#BAB0AC"]
    for col, model in enumerate(models, start=1):
        xy = embedding["coords"][model].numpy()
        preds = embedding["predictions"][model].tolist()
        for split, symbol, size in (("retain", "circle", 5), ("test", "circle-open", 5),
                                    (forget_label, "x", 8)):
            for c in classes:
                idx = [i for i, (s, y) in enumerate(zip(splits, labels, strict=True))
                       if s == split and y == c]
                if not idx:
                    continue
                fig.add_trace(go.Scattergl(
                    x=xy[idx, 0], y=xy[idx, 1], mode="markers",
                    marker=dict(color=palette[c % len(palette)], symbol=symbol, size=size),
                    name=f"class {c}" if split == "retain" else f"class {c} ({split})",
                    legendgroup=f"{c}-{split}", showlegend=col == 1,
                    customdata=[[splits[i], labels[i], preds[i], int(embedding["rows"][i])]
                                for i in idx],
                    hovertemplate="%{customdata[0]} sample %{customdata[3]}<br>label "
                                  "%{customdata[1]}, predicted %{customdata[2]}<extra></extra>"),
                    row=1, col=col)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def parallel_figure(rows: list[dict], keys: list[str]) -> go.Figure:
    """Parallel coordinates over runs: one line per run, coloured by avg-gap."""
    gaps = [r.get("avg_gap") or 0.0 for r in rows]
    dims = [dict(label=k, values=[r.get(k) if r.get(k) is not None else float("nan")
                                  for r in rows]) for k in keys]
    fig = go.Figure(go.Parcoords(line=dict(color=gaps, colorscale="RdYlGn_r", showscale=True,
                                           colorbar=dict(title="avg gap")), dimensions=dims))
    fig.update_layout(height=420, margin=dict(l=60, r=40, t=40, b=30))
    return fig
