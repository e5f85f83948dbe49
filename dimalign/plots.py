"""Figure builders (plotly and image arrays). No streamlit here: pages only display."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas  # noqa: F401 - see below
import plotly.graph_objects as go
import torch

from dimalign.geometry import k_for_energy
from dimalign.metric_table import TABLE, TIME_FRACTION, gap_to_retrained, shown

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


# the live curves' panels; the metric panels hold the metrics the table shows in "curves"
CURVE_GROUPS = (
    ("Loss terms", lambda k: k.startswith("loss_")),
    ("Accuracy on fixed subsets", lambda k: k in shown("curves", "accuracy")),
    ("Dimensional Alignment (forget vs retain)", lambda k: k in shown("curves", "alignment")),
    ("Smallest principal angles (degrees)", lambda k: k.startswith("angle_")),
)


MARKERS_UP_TO = 25
STEP_PICKER = "step-picker"  # meta of each panel's curve a click selects a step on

# background of the steps a phase covers on the live curves; other phases are left plain
PHASE_SHADES = {"forget": "rgba(228, 87, 86, 0.10)", "max": "rgba(228, 87, 86, 0.10)",
                "recover": "rgba(84, 162, 75, 0.10)", "min": "rgba(84, 162, 75, 0.10)"}
SHADED_SPANS_UP_TO = 60  # more spans than this are too thin to read: no shading then
PHASE_LABELS_UP_TO = 12  # and more than this are shaded without their names


def phase_spans(curves: dict[str, list[tuple[int, float]]]) -> list[tuple[str, int, int]]:
    """(phase, first step, last step) of each run of telemetry points in one phase, from the
    `phase_<name>` metrics the loop records; a point stands for the steps since the one before,
    so spans meet. The start point (phase "start") only opens the first span."""
    marks = sorted((step, key.removeprefix("phase_")) for key, points in curves.items()
                   if key.startswith("phase_") for step, _ in points)
    spans: list[tuple[str, int, int]] = []
    previous = None
    for step, name in marks:
        if name != "start":
            if spans and spans[-1][0] == name:
                spans[-1] = (name, spans[-1][1], step)
            else:
                spans.append((name, step if previous is None else previous, step))
        previous = step
    return spans


def _grid(titles: list[str], spacing: tuple[float, float] = (0.08, 0.14)) -> dict:
    """A 2x2 grid layout as make_subplots draws it (axes x/y, x2/y2, ... row by row, panel
    titles above), built as plain dicts: make_subplots and add_trace validate every value,
    ~80 ms for the live curves, paid on each redraw of a live page."""
    width, height = (1 - spacing[0]) / 2, (1 - spacing[1]) / 2
    layout, notes = {}, []
    for i, title in enumerate(titles):
        row, col = divmod(i, 2)
        x0 = col * (width + spacing[0])
        y1 = 1 - row * (height + spacing[1])
        n = "" if i == 0 else str(i + 1)
        layout[f"xaxis{n}"] = dict(domain=[round(x0, 6), round(x0 + width, 6)],
                                   anchor=f"y{n}", title_text="step")
        layout[f"yaxis{n}"] = dict(domain=[round(y1 - height, 6), round(y1, 6)],
                                   anchor=f"x{n}")
        notes.append(dict(text=title, x=x0 + width / 2, y=y1, xref="paper", yref="paper",
                          xanchor="center", yanchor="bottom", showarrow=False,
                          font=dict(size=16)))
    layout["annotations"] = notes
    return layout


def telemetry_figure(curves: dict[str, list[tuple[int, float]]],
                     references: dict[str, dict[str, float]] | None = None,
                     ghosts: list[tuple[str, dict[str, list[tuple[int, float]]]]] = (),
                     pickable: bool = False) -> go.Figure:
    """A run's live curves in four panels; `references` draws e.g. the retrained and original
    models' values ({"retrained": {"acc_forget": 0.0, "da": 0.97}, ...}) as dashed lines.
    Forget and recover phases (SCRUB's max and min) are shaded, from the `phase_<name>` curves.
    `ghosts`: earlier runs as (label, curves), newest first, drawn faint and fading behind.
    `pickable`: a click on any panel's first curve selects its step (the film goes there):
    plotly selects markers only, so that curve gets unseen ones where it has none."""
    layout = _grid([g[0] for g in CURVE_GROUPS])
    traces: list[dict] = []
    dashes = {"retrained": "dash", "original": "dot"}
    shapes, notes = [], []
    spans = [s for s in phase_spans(curves) if s[0] in PHASE_SHADES and s[2] > s[1]]
    if len(spans) > SHADED_SPANS_UP_TO:
        spans = []
    label = len(spans) <= PHASE_LABELS_UP_TO  # phase names, in the first panel drawn
    in_legend: set[int] = set()  # each ghost once in the legend
    for i, (_, wanted) in enumerate(CURVE_GROUPS):
        axis = "" if i == 0 else str(i + 1)
        on_axes = dict(xaxis=f"x{axis}", yaxis=f"y{axis}")
        keys = sorted(k for k in curves if wanted(k))
        for name, x0, x1 in spans if keys else ():  # one rectangle a span and panel
            shape = dict(type="rect", xref=f"x{axis}", x0=x0, x1=x1, yref=f"y{axis} domain",
                         y0=0, y1=1, layer="below", fillcolor=PHASE_SHADES[name],
                         line=dict(width=0))
            if label:
                shape["label"] = dict(text=name, textposition="top center",
                                      font=dict(size=9, color="#888"))
            shapes.append(shape)
        label = label and not (keys and spans)
        for g, (ghost, ghost_curves) in enumerate(ghosts):
            for key in sorted(k for k in ghost_curves if wanted(k) and ghost_curves[k]):
                steps, values = zip(*ghost_curves[key], strict=True)
                traces.append(dict(
                    type="scatter", x=list(steps), y=list(values), mode="lines", name=ghost,
                    legendgroup=f"ghost{g}", showlegend=g not in in_legend,
                    opacity=0.45 * (1 - g / (len(ghosts) + 1)), hoverinfo="name+y",
                    line=dict(width=1, color="#888", dash="dot"), **on_axes))
                in_legend.add(g)
        for key in keys:
            steps, values = zip(*curves[key], strict=True) if curves[key] else ((), ())
            # markers only while few: each is an SVG node, and long runs have hundreds
            mode = "lines+markers" if len(steps) <= MARKERS_UP_TO else "lines"
            trace = dict(type="scatter", x=list(steps), y=list(values), mode=mode,
                         name=key.removeprefix("loss_"), legendgroup=str(i), **on_axes)
            if pickable and key == keys[0]:  # unseen markers, where too many to draw
                trace.update(meta=STEP_PICKER, mode="lines+markers", marker=dict(
                    size=10, opacity=1 if mode == "lines+markers" else 0))
            traces.append(trace)
            for ref, values_by_key in (references or {}).items():
                if values_by_key.get(key) is None:
                    continue
                y = values_by_key[key]
                shapes.append(dict(type="line", xref=f"x{axis} domain", x0=0, x1=1,
                                   yref=f"y{axis}", y0=y, y1=y,
                                   line=dict(width=1, dash=dashes.get(ref, "dash"))))
                notes.append(dict(text=f"{ref} {key}", xref=f"x{axis} domain", x=1,
                                  yref=f"y{axis}", y=y, xanchor="right", yanchor="bottom",
                                  showarrow=False, font=dict(size=9)))
    layout.update(height=620, margin=dict(l=40, r=20, t=50, b=40), shapes=shapes,
                  annotations=layout["annotations"] + notes)
    return go.Figure(data=traces, layout=layout, _validate=False)  # built from checked parts


def _spectra(geometry: dict, split: str, centered: bool):
    """(model, normalised spectrum) of one split's saved features, skipping missing ones."""
    kind = "centered" if centered else "plain"
    for name, g in geometry["models"].items():
        if g["spectra"][split][kind] is not None:
            yield name, g["spectra"][split][kind]


def spectra_figure(geometry: dict, split: str = "forget", centered: bool = False) -> go.Figure:
    """Normalised eigenspectra (log scale) of one split's features, one line per model."""
    fig = go.Figure()
    for name, values in _spectra(geometry, split, centered):
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values.tolist(),
                                 mode="lines", name=name))
    kind = "centered" if centered else "plain"
    fig.update_layout(title=f"Eigenspectrum of {split} features ({kind})", yaxis_type="log",
                      xaxis_title="eigenvalue index", yaxis_title="share of energy", height=380)
    return fig


MODEL_COLOURS = {"original": "#E45756", "retrained": "#4C78A8", "unlearned": "#54A24B"}


def cumulative_figure(geometry: dict, split: str, energy: float,
                      centered: bool = False) -> tuple[go.Figure, dict[str, int]]:
    """Cumulative energy of each model's spectrum, the `energy` line and the k it selects."""
    fig, ks = go.Figure(), {}
    for name, values in _spectra(geometry, split, centered):
        cumulative = values.double().cumsum(0)
        ks[name] = k_for_energy(values, energy)
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
    for col, split in enumerate(splits, start=1):
        for name, values in _spectra(geometry, split, centered):
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


PALETTE = ["#4C78A8", "#F58518", "#E45756", "#72B7B2", "#54A24B", "#EECA3B", "#B279A2",
           "#FF9DA6", "#9D755D", "#BAB0AC"]
SVG_POINTS = 4000
SPLIT_MARKERS = (("retain", "circle", 5), ("test", "circle-open", 5), ("forget", "x", 8))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (lower is better),
    ordered by the first coordinate."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


NOISE_LABEL = "indistinguishable from retraining"
NOISE_FILL = "rgba(140, 140, 140, 0.22)"


def tradeoff_figure(rows: list[dict], keys: list[str], retrained: dict,
                    floor: dict | None = None) -> go.Figure:
    """Left: every run's gap to the retrained model per metric (a parallel-coordinates profile;
    0 is retraining). Right: avg-gap against `time_fraction` (time as a fraction of
    retraining), with the Pareto front. Plain SVG traces, so the chart draws fast without a GPU
    and exports cleanly. Rows over replicates carry `gap` (mean paired gap per metric), `sd`
    and `gap_sd` (error bars); `floor` (the noise floor per metric) draws the grey band of
    gaps that retraining itself shows."""
    from plotly.subplots import make_subplots

    avg, cost = TABLE["avg_gap"], TIME_FRACTION
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.08,
                        subplot_titles=["gap to retrained, per metric",
                                        f"{avg.title} vs {cost.title}"])
    # distances (avg-gap) are their own gap: they get the right panel, not a profile point
    metrics = [k for k in keys if not (k in TABLE and TABLE[k].distance)
               and retrained.get(k) is not None]
    if floor:
        _noise_profile(fig, metrics, floor)
    points = []  # (time fraction, avg-gap) of every run that has both
    for n, row in enumerate(rows):
        label = row["method"] if row["run"] == row["method"] else f"{row['method']} {row['run']}"
        colour = "#222222" if row["method"] == "retrained" else PALETTE[n % len(PALETTE)]
        paired, sd, gap_sd = row.get("gap"), row.get("sd") or {}, row.get("gap_sd") or {}
        gaps = [paired.get(k) if paired else gap_to_retrained(k, row.get(k), retrained[k])
                for k in metrics]
        bars = _error_bars([gap_sd.get(k) for k in metrics]) if gap_sd else None
        fig.add_trace(go.Scatter(x=metrics, y=gaps, mode="lines+markers", name=label,
                                 legendgroup=label, line=dict(color=colour), error_y=bars),
                      row=1, col=1)
        gap = 0.0 if row["method"] == "retrained" else row.get(avg.name)
        time = row.get(cost.name)
        if gap is not None and time is not None:
            points.append((time, gap))
            fig.add_trace(go.Scatter(
                x=[time], y=[gap], mode="markers+text", text=[row["method"]],
                textposition="top center", marker=dict(size=11, color=colour), name=label,
                legendgroup=label, showlegend=False,
                error_x=_error_bars([sd.get(cost.name)]) if sd else None,
                error_y=_error_bars([sd.get(avg.name)]) if sd else None), row=1, col=2)
    front = [points[i] for i in pareto_front(points)]
    fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines",
                             line=dict(dash="dot", color="#888888"), name="Pareto front",
                             hoverinfo="skip"), row=1, col=2)
    if floor and floor.get(avg.name) is not None:
        fig.add_hrect(y0=0, y1=floor[avg.name], fillcolor=NOISE_FILL, line_width=0,
                      row=1, col=2)
    fig.add_hline(y=0, line=dict(color="#222222", width=1), row=1, col=1)
    longest = max((p[0] for p in points), default=1.0)
    fig.update_xaxes(title_text=cost.title, range=[-0.1 * longest, 1.12 * longest],
                     row=1, col=2)  # room for the labels of points at either end
    fig.update_yaxes(title_text="value − retrained", row=1, col=1)
    fig.update_yaxes(title_text=f"{avg.title} ({avg.better} is better)", row=1, col=2)
    fig.update_layout(height=440, margin=dict(l=60, r=20, t=50, b=40))
    return fig


def strata_figure(rows: list[dict], metric: str, floors: dict) -> go.Figure:
    """Forget-set difficulty at a glance: a row per model or setting (`strata.strata_rows`),
    a column per stratum (easy → hard), each cell coloured by the mean |gap| to the retrained
    model on that stratum and reading "value ± sd"; "≈" marks a gap within the stratum's
    noise floor (retraining against itself), where the setting is indistinguishable from
    retraining. Avg-gap, a distance, is coloured by its value."""
    from dimalign.strata import STRATA

    spec = TABLE[metric]
    names = [n for n in STRATA if any(n in row["strata"] for row in rows)]
    labels, z, text, hover = [], [], [], []
    for row in rows:
        label = row["method"] if row["run"] == row["method"] else f"{row['method']} · {row['run']}"
        labels.append(label)
        zs, texts, hovers = [], [], []
        for name in names:
            cell = row["strata"].get(name, {})
            value = cell.get("mean", {}).get(metric)
            sd = cell.get("sd", {}).get(metric) if row["replicates"] > 1 else None
            gap = value if spec.distance else cell.get("abs_gap", {}).get(metric)
            if row["method"] == "retrained" and not spec.distance:
                gap = 0.0
            floor = floors.get(name, {}).get(metric)
            near = gap is not None and floor is not None and gap <= floor
            zs.append(gap)
            texts.append("–" if value is None else ("≈ " if near else "")
                         + (f"{value:.3f} ± {sd:.3f}" if sd is not None else f"{value:.3f}"))
            hovers.append(f"{label}<br>{name}: {spec.title} {_num(value)}"
                          + (f" ± {_num(sd)}" if sd is not None else "")
                          + f"<br>|gap| to retrained {_num(gap)}"
                          + (f"<br>noise floor {_num(floor)}" if floor is not None else ""))
        z.append(zs)
        text.append(texts)
        hover.append(hovers)
    top = max((v for row in z for v in row if v is not None), default=0.0)
    fig = go.Figure(go.Heatmap(  # 0 is white; all 0 (every cell is retraining's): all white
        z=z, x=names, y=labels, text=text, texttemplate="%{text}", hovertext=hover,
        hoverinfo="text", colorscale="Reds", zmin=0, zmax=top if top > 0 else 1.0,
        xgap=2, ygap=2,
        colorbar=dict(title=dict(text=spec.title if spec.distance else "|gap|", side="right"))))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(side="top", title_text="forget-set stratum (easy → hard)")
    fig.update_layout(height=120 + 34 * len(rows), margin=dict(l=20, r=20, t=70, b=20),
                      title=dict(text=f"{spec.title} per stratum", x=0, y=0.98))
    return fig


def room_figure(points: list[dict], box: tuple[float, float] | None = None,
                large: bool = False) -> go.Figure:
    """The instructor's room on one Pareto chart: every finished run's forget gap against its
    retain gap (both |unlearned − retrained|, 0 is retraining), one colour per participant,
    each participant's best run starred and named, the room's Pareto front, and `box`, the
    noise floor's (forget, retain) gaps, as the grey corner indistinguishable from retraining.
    Each point's customdata is [run id], which a click opens. `large`: projector type."""
    fig = go.Figure()
    if box is not None:
        fig.add_shape(type="rect", x0=0, y0=0, x1=box[0], y1=box[1], fillcolor=NOISE_FILL,
                      line_width=0, layer="below")
        fig.add_annotation(x=box[0], y=box[1], text=NOISE_LABEL, showarrow=False,
                           xanchor="left", yanchor="bottom", font=dict(color="#666666"))
    owners = list(dict.fromkeys(p["participant"] for p in points))
    colour = {o: PALETTE[i % len(PALETTE)] for i, o in enumerate(owners)}
    for owner in owners:
        mine = [p for p in points if p["participant"] == owner]
        fig.add_trace(go.Scatter(
            x=[p["forget_gap"] for p in mine], y=[p["retain_gap"] for p in mine],
            mode="markers", name=owner, legendgroup=owner, marker=dict(size=9,
                                                                       color=colour[owner]),
            customdata=[[p["run"]] for p in mine], text=[p["method"] for p in mine],
            hovertemplate=f"{owner}: %{{customdata[0]}} (%{{text}})<br>forget gap %{{x:.3f}}"
                          "<br>retain gap %{y:.3f}<extra></extra>"))
    best = [p for p in points if p["best"]]
    fig.add_trace(go.Scatter(
        x=[p["forget_gap"] for p in best], y=[p["retain_gap"] for p in best],
        mode="markers+text", name="best of each", text=[p["participant"] for p in best],
        textposition="top center", customdata=[[p["run"]] for p in best],
        marker=dict(symbol="star", size=20 if large else 16,
                    color=[colour[p["participant"]] for p in best],
                    line=dict(color="#222222", width=1.5)),
        hovertemplate="%{text}'s best: %{customdata[0]}<extra></extra>"))
    front = [points[i] for i in pareto_front([(p["forget_gap"], p["retain_gap"])
                                              for p in points])]
    fig.add_trace(go.Scatter(x=[p["forget_gap"] for p in front],
                             y=[p["retain_gap"] for p in front], mode="lines",
                             line=dict(dash="dot", color="#888888"), name="Pareto front",
                             hoverinfo="skip"))
    size = 20 if large else 13
    for axis, name, edge in ((fig.update_xaxes, "forget_gap", 0), (fig.update_yaxes,
                                                                   "retain_gap", 1)):
        top = max([p[name] for p in points] + ([box[edge]] if box else []), default=0.0) or 1.0
        axis(range=[-0.05 * top, 1.12 * top])  # room for the stars and labels at either end
    fig.update_traces(textfont=dict(size=size), selector=dict(mode="markers+text"))
    fig.update_xaxes(title_text="forget gap |acc_forget − retrained| (lower is better)",
                     tickfont=dict(size=size), title_font=dict(size=size))
    fig.update_yaxes(title_text="retain gap |acc_retain − retrained| (lower is better)",
                     tickfont=dict(size=size), title_font=dict(size=size))
    fig.update_layout(height=640 if large else 460, margin=dict(l=60, r=20, t=30, b=50),
                      font=dict(size=size), legend=dict(title=dict(text="participant"),
                                                        font=dict(size=size)))
    if large:  # drawn without the page's theme, which would set its own type sizes
        fig.update_layout(template="plotly_white")
    return fig


# ---------------------------------------------------------------------------- the audit

SPLIT_COLOURS = {"retain": "#4C78A8", "forget": "#E45756", "test": "#9D9D9D"}
LAYER_QUANTITIES = (("da", "DA(forget | retain)"), ("cka_retrained", "linear CKA to retrained"),
                    ("effective_rank", "effective rank (retain)"))


def layer_profile_figure(audit: dict) -> go.Figure:
    """Depth profiles: DA, CKA to the retrained model and effective rank at each layer (input
    to output), one line per model."""
    from plotly.subplots import make_subplots

    names = [layer["name"] for layer in audit["layers"]]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in LAYER_QUANTITIES])
    for col, (key, _) in enumerate(LAYER_QUANTITIES, start=1):
        for model in audit["mia"]:
            fig.add_trace(go.Scatter(
                x=names, y=[layer["models"][model][key] for layer in audit["layers"]],
                mode="lines+markers", name=model, legendgroup=model, showlegend=col == 1,
                line_color=MODEL_COLOURS.get(model)), row=1, col=col)
    fig.update_xaxes(title_text="layer (input → output)")
    fig.update_layout(height=380, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def membership_figure(audit: dict, score: str, threshold: float | None = None) -> go.Figure:
    """Per model, overlaid histograms (share of each split) of one output score for forget,
    retain and test samples; the threshold attack's threshold as a dashed line."""
    from plotly.subplots import make_subplots

    models = list(audit["mia"])
    fig = make_subplots(rows=1, cols=len(models), shared_yaxes=True,
                        subplot_titles=[f"{m} (AUC {_num(audit['mia'][m]['auc'])})"
                                        for m in models])
    for col, model in enumerate(models, start=1):
        hist = audit["mia"][model]["histograms"][score]
        edges = hist["edges"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        for split in ("retain", "test", "forget"):
            counts = hist[split]
            total = sum(counts) or 1
            fig.add_trace(go.Bar(x=centres, y=[c / total for c in counts], name=split,
                                 legendgroup=split, showlegend=col == 1, opacity=0.55,
                                 marker_color=SPLIT_COLOURS[split],
                                 width=edges[1] - edges[0]), row=1, col=col)
        if threshold is not None:
            fig.add_vline(x=threshold, line_dash="dash", line_color="black", row=1, col=col)
    title = "output entropy" if score == "entropy" else "max confidence"
    fig.update_xaxes(title_text=title)
    fig.update_yaxes(title_text="share of the split", col=1)
    fig.update_layout(barmode="overlay", height=360, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def relearn_figure(audit: dict) -> go.Figure:
    """Relearn attack: accuracy on the remaining forget samples and on the second set (test
    samples of the forgotten classes, or the test set) after each fine-tuning step, one line
    per model; the relearnt threshold dashed."""
    from plotly.subplots import make_subplots

    s = audit["settings"]
    second = s["relearn_second"]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=[
        "remaining forget samples", s["relearn_second_title"]])
    for col, key in enumerate(("acc_forget", f"acc_{second}"), start=1):
        for model, entry in audit["relearn"].items():
            curve = entry["curve"]
            steps = entry["steps_to_relearn"]
            label = f"{model} ({'never' if steps is None else f'{steps} steps'})"
            fig.add_trace(go.Scatter(x=[p["step"] for p in curve], y=[p[key] for p in curve],
                                     mode="lines", name=label, legendgroup=model,
                                     showlegend=col == 1, line_color=MODEL_COLOURS.get(model)),
                          row=1, col=col)
    if s["relearn_threshold"] is not None:
        fig.add_hline(y=s["relearn_threshold"], line_dash="dash", line_color="black", row=1,
                      col=1, annotation_text="relearnt", annotation_position="bottom right")
    fig.update_xaxes(title_text="fine-tuning step")
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], col=1)
    fig.update_layout(height=360, margin=dict(l=50, r=20, t=40, b=40))
    return fig


def _forgotten_bands(fig: go.Figure, forgotten: list[int], **where) -> None:
    for c in forgotten:
        fig.add_vrect(x0=c - 0.5, x1=c + 0.5, fillcolor="rgba(228, 87, 86, 0.15)",
                      line_width=0, layer="below", **where)


def class_accuracy_figure(audit: dict) -> go.Figure:
    """Per-class test accuracy of each model, the forgotten classes shaded."""
    cw = audit["classwise"]
    fig = go.Figure()
    for model, entry in cw["models"].items():
        fig.add_trace(go.Bar(x=cw["classes"], y=entry["accuracy"], name=model,
                             marker_color=MODEL_COLOURS.get(model)))
    _forgotten_bands(fig, cw["forgotten"])
    fig.update_layout(barmode="group", height=340, margin=dict(l=50, r=20, t=40, b=40),
                      title="Test accuracy per class" + (" (forgotten classes shaded)"
                                                         if cw["forgotten"] else ""),
                      xaxis=dict(title="class", tickmode="array", tickvals=cw["classes"]),
                      yaxis=dict(title="accuracy", range=[0, 1.02]))
    return fig


def confusion_figure(audit: dict) -> go.Figure:
    """Each model's test confusion matrix (rows: true class, columns: predicted), as shares
    of each row; the forgotten classes' rows outlined."""
    from plotly.subplots import make_subplots

    cw = audit["classwise"]
    models = list(cw["models"])
    fig = make_subplots(rows=1, cols=len(models), subplot_titles=models,
                        horizontal_spacing=0.05)
    for col, model in enumerate(models, start=1):
        matrix = np.asarray(cw["models"][model]["confusion"], dtype=float)
        shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        fig.add_trace(go.Heatmap(z=shares, x=cw["classes"], y=cw["classes"], zmin=0, zmax=1,
                                 colorscale="Blues", showscale=col == len(models),
                                 customdata=matrix.astype(int),
                                 hovertemplate="true %{y}, predicted %{x}: %{customdata} "
                                               "(%{z:.2f})<extra></extra>"), row=1, col=col)
        for c in cw["forgotten"]:
            fig.add_shape(type="rect", x0=-0.5, x1=len(cw["classes"]) - 0.5, y0=c - 0.5,
                          y1=c + 0.5, line=dict(color="#E45756", width=2), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="true class", col=1)
    fig.update_xaxes(title_text="predicted")
    fig.update_layout(height=360, margin=dict(l=50, r=20, t=40, b=40))
    return fig


# ---------------------------------------------------------------------------- replicates


def _error_bars(sd: list) -> dict:
    return dict(type="data", array=[0.0 if v is None else v for v in sd], visible=True,
                thickness=1.2, width=3)


def _noise_profile(fig: go.Figure, metrics: list[str], floor: dict) -> None:
    """The ± noise-floor band around 0 on the per-metric profile (metrics without a floor get
    none)."""
    width = [floor.get(k) for k in metrics]
    if all(w is None for w in width):
        return
    width = [0.0 if w is None else w for w in width]
    fig.add_trace(go.Scatter(x=metrics, y=[-w for w in width], mode="lines", line=dict(width=0),
                             hoverinfo="skip", showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(x=metrics, y=width, mode="lines", line=dict(width=0),
                             fill="tonexty", fillcolor=NOISE_FILL, name=NOISE_LABEL,
                             hovertemplate="noise floor ±%{y:.3f}<extra></extra>"),
                  row=1, col=1)


def _within(value, reference, floor, distance: bool) -> bool:
    if value is None or reference is None or floor is None:
        return False
    return value <= floor if distance else abs(value - reference) <= floor


def _axis_values(values: list, log: bool) -> dict:
    """A log axis for a log-spaced knob, its ticks at the swept values, written out in full
    (plotly's own log ticks write 0.5, 5 and 50 all as "5")."""
    if not (log and all(v > 0 for v in values)):
        return {}
    ticks = sorted(set(values))
    return dict(type="log", tickvals=ticks, ticktext=[f"{v:g}" for v in ticks])


def sweep_figure(rows: list[dict], knobs: list[str], metric: str, reference: float | None,
                 floor: float | None, log: dict[str, bool] | None = None) -> go.Figure:
    """A sweep's results (`replicates.setting_rows` rows, knob values in `params`). One knob:
    the metric's mean along the knob with a ± sd band, the retrained value and the grey
    noise-floor band around it. Two knobs: a heatmap of the mean, the sd on hover. The best
    setting (lowest avg-gap) is marked with its time. Every point carries its run id
    (`customdata[0]`) for a click to open it."""
    log = log or {}
    m = TABLE.get(metric, TIME_FRACTION)
    best = min(rows, key=lambda r: r["mean"].get("avg_gap") if r["mean"].get("avg_gap")
               is not None else float("inf"))
    best_time = best["mean"].get(TIME_FRACTION.name)
    best_text = (f"best avg-gap {best['mean']['avg_gap']:.3f}"
                 + (f" · time {best_time:.2f}× retraining" if best_time is not None else ""))
    fig = go.Figure()
    if len(knobs) == 1:
        k = knobs[0]
        rows = sorted(rows, key=lambda r: r["params"][k])
        x = [r["params"][k] for r in rows]
        mean = [r["mean"].get(metric) for r in rows]
        sd = [r["sd"].get(metric) or 0.0 for r in rows]
        if reference is not None:
            if floor is not None:
                low = reference if m.distance else reference - floor
                fig.add_hrect(y0=low, y1=reference + floor, fillcolor=NOISE_FILL, line_width=0,
                              annotation_text=NOISE_LABEL, annotation_position="top left")
            fig.add_hline(y=reference, line=dict(color="#222222", dash="dash"),
                          annotation_text="retrained", annotation_position="bottom right")
        band = [(v - s, v + s) for v, s in zip(mean, sd, strict=True) if v is not None]
        if len(band) == len(x):
            fig.add_trace(go.Scatter(x=x + x[::-1], y=[b[1] for b in band]
                                     + [b[0] for b in band][::-1], fill="toself",
                                     fillcolor="rgba(76, 120, 168, 0.2)", line=dict(width=0),
                                     hoverinfo="skip", name="± sd"))
        fig.add_trace(go.Scatter(
            x=x, y=mean, mode="lines+markers", name=m.title, marker=dict(size=10),
            customdata=[[r["run"], s, r["replicates"]] for r, s in zip(rows, sd, strict=True)],
            hovertemplate=f"{k}=%{{x:g}}<br>{m.title} %{{y:.3f}} ± %{{customdata[1]:.3f}} "
                          "(%{customdata[2]} replicates)<br>run %{customdata[0]}"
                          "<extra></extra>"))
        fig.add_trace(go.Scatter(x=[best["params"][k]], y=[best["mean"].get(metric)],
                                 mode="markers+text", text=[best_text], textposition="top center",
                                 marker=dict(symbol="star", size=18, color="#E45756"),
                                 name="best", hoverinfo="skip"))
        fig.update_xaxes(title_text=k, **_axis_values(x, log.get(k, False)))
        fig.update_yaxes(title_text=m.title)
    else:
        kx, ky = knobs
        xs = sorted({r["params"][kx] for r in rows})
        ys = sorted({r["params"][ky] for r in rows})
        cell = {(r["params"][kx], r["params"][ky]): r for r in rows}
        z = [[cell[(a, b)]["mean"].get(metric) if (a, b) in cell else None for a in xs]
             for b in ys]
        label = [f"{v:g}" for v in xs], [f"{v:g}" for v in ys]
        fig.add_trace(go.Heatmap(x=label[0], y=label[1], z=z, colorscale="Viridis_r",
                                 colorbar=dict(title=m.title), hoverinfo="skip"))
        # clicks and hover go to an invisible marker on each cell (heatmaps are not
        # selectable); a cell within the noise floor of the retrained value says so
        fig.add_trace(go.Scatter(
            x=[f"{r['params'][kx]:g}" for r in rows], y=[f"{r['params'][ky]:g}" for r in rows],
            mode="markers+text", marker=dict(size=40, symbol="square", color="rgba(0,0,0,0)"),
            text=["≈ retrain" if _within(r["mean"].get(metric), reference, floor, m.distance)
                  else "" for r in rows], textfont=dict(color="#555555"),
            customdata=[[r["run"], r["sd"].get(metric) or 0.0, r["replicates"],
                         r["mean"].get(metric)] for r in rows],
            hovertemplate=f"{kx}=%{{x}}, {ky}=%{{y}}<br>{m.title} %{{customdata[3]:.3f}} ± "
                          "%{customdata[1]:.3f} (%{customdata[2]} replicates)<br>run "
                          "%{customdata[0]}<extra></extra>", name="settings",
            showlegend=False))
        fig.add_trace(go.Scatter(x=[f"{best['params'][kx]:g}"], y=[f"{best['params'][ky]:g}"],
                                 mode="markers+text", text=[best_text],
                                 textposition="top center", hoverinfo="skip", name="best",
                                 marker=dict(symbol="star", size=18, color="#E45756")))
        fig.update_layout(showlegend=False)  # the colour bar takes the legend's place
        fig.update_xaxes(title_text=kx, type="category")
        fig.update_yaxes(title_text=ky, type="category")
        if floor is not None and reference is not None:
            fig.update_layout(title=dict(text=f"≈ retrain: {NOISE_LABEL} (within the noise "
                                         f"floor, {floor:.3f})", font=dict(size=13)))
    fig.update_layout(height=440, margin=dict(l=60, r=20, t=50, b=40), clickmode="event+select")
    return fig


def film_figure(view: dict) -> go.Figure:
    """The film (`film.linear_view`) as an animated 3-D scatter: one trace per split, a frame
    per recorded step, a play button and a step slider. z is each point's residual outside the
    frame's retain eigenspace: forgetting is the forget points falling onto the retain plane."""

    def traces(frame: dict) -> list[go.Scatter3d]:
        out = []
        for split, symbol, size in SPLIT_MARKERS:
            points = [p for p in frame["points"] if p["split"] == split]
            out.append(go.Scatter3d(
                x=[p["x"] for p in points], y=[p["y"] for p in points],
                z=[p["z"] for p in points], mode="markers", name=split,
                marker={"size": size / 2, "color": SPLIT_COLOURS[split], "symbol": symbol},
                customdata=[[p["id"], p["label"], p["confidence"]] for p in points],
                hovertemplate="sample %{customdata[0]} (label %{customdata[1]})<br>residual "
                              "%{z:.3f}<br>confidence %{customdata[2]:.3f}<extra>" + split
                              + "</extra>"))
        return out

    frames = view["frames"]
    names = [f"step {f['step']} ({f['phase']})" for f in frames]
    fig = go.Figure(data=traces(frames[0]),
                    frames=[go.Frame(data=traces(f), name=n) for f, n in zip(frames, names,
                                                                              strict=True)])
    every = [p[axis] for f in frames for p in f["points"] for axis in ("x", "y")
             if p[axis] is not None]
    span = (min(every), max(every)) if every else (-1.0, 1.0)
    fig.update_layout(
        scene={"xaxis": {"title": "retain direction 1", "range": span},
               "yaxis": {"title": "retain direction 2", "range": span},
               "zaxis": {"title": "residual outside retain", "range": [0, 1]}},
        margin={"l": 0, "r": 0, "t": 30, "b": 0}, legend={"orientation": "h"},
        updatemenus=[{"type": "buttons", "showactive": False, "x": 0.0, "y": 0.0,
                      "buttons": [{"label": "Play", "method": "animate",
                                   "args": [None, {"frame": {"duration": 300},
                                                   "fromcurrent": True}]},
                                  {"label": "Pause", "method": "animate",
                                   "args": [[None], {"mode": "immediate"}]}]}],
        sliders=[{"active": 0, "currentvalue": {"prefix": ""}, "pad": {"t": 20},
                  "steps": [{"label": n, "method": "animate",
                             "args": [[n], {"mode": "immediate", "frame": {"duration": 0}}]}
                            for n in names]}])
    return fig


# The film as a GIF or an MP4, drawn straight into a fixed palette with Pillow: no browser, no
# plotly export engine, and no colour quantisation, so the same view always gives the same GIF.
# Ghosts are their split's colour blended 75 % into white (a GIF has no alpha).
_GIF_INK = {"bg": "#FFFFFF", "ink": "#333333", "grid": "#E6E6E6", "trail": "#F0A9A9",
            **SPLIT_COLOURS}
_GIF_GHOST = {"original": "ring", "retrained": "dot"}


def _hex(colour: str, faint: bool = False) -> tuple[int, int, int]:
    rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(round(255 - (255 - c) * 0.25) for c in rgb) if faint else rgb


def _film_frames(view: dict, size: tuple[int, int]) -> Iterator:
    """The film's frames as palette ("P") PIL images, drawn one at a time as they are taken
    (the GIF and the MP4 both draw these); an empty film raises here, not at the first frame."""
    if not view["frames"]:
        raise ValueError("the film has no frames")
    return _draw_film(view, size)


def _draw_film(view: dict, size: tuple[int, int]) -> Iterator:
    from PIL import Image, ImageDraw, ImageFont

    frames = view["frames"]
    names = list(_GIF_INK) + [f"faint {s}" for s in SPLIT_COLOURS]
    palette = [_hex(c) for c in _GIF_INK.values()]
    palette += [_hex(c, True) for c in SPLIT_COLOURS.values()]
    ink = {n: i for i, n in enumerate(names)}
    splits = [p["split"] for p in frames[0]["points"]]

    def coords(points: list[dict]) -> np.ndarray:  # (N, 2) x, residual; NaN where undefined
        return np.array([[np.nan if p[k] is None else p[k] for k in ("x", "residual")]
                         for p in points], dtype=float).reshape(-1, 2)

    xr = np.stack([coords(f["points"]) for f in frames])  # (F, N, 2)
    ghost_points = {name: (view.get("ghosts") or {}).get(name) or [] for name in _GIF_GHOST}
    ghosts = {name: coords(points) for name, points in ghost_points.items()}  # older films: none
    # one x range over every frame and ghost, residual always 0..1 (a share of the norm), so
    # nothing jumps between frames
    xs = np.concatenate([xr[..., 0].ravel(), *(g[:, 0] for g in ghosts.values())])
    xs = xs[np.isfinite(xs)]
    x0, x1 = (float(xs.min()), float(xs.max())) if xs.size else (-1.0, 1.0)
    pad = 0.04 * (x1 - x0 or 1.0)
    x0, x1 = x0 - pad, x1 + pad
    w, h = size
    left, right, top, bottom = 44, w - 10, 36, h - 34

    def to_px(c: np.ndarray) -> np.ndarray:
        px = left + (c[..., 0] - x0) / (x1 - x0) * (right - left)
        py = bottom - np.clip(c[..., 1], 0.0, 1.0) * (bottom - top)
        return np.stack([px, py], axis=-1).round()

    font = ImageFont.load_default()
    base = Image.new("P", size, ink["bg"])
    base.putpalette([v for rgb in palette for v in rgb])
    d = ImageDraw.Draw(base)
    for i in range(6):  # residual grid 0, 0.2, .., 1 and x ticks at the same fractions
        y = bottom - i / 5 * (bottom - top)
        d.line([(left, y), (right, y)], fill=ink["grid"])
        d.text((left - 4, y), f"{i / 5:.1f}", fill=ink["ink"], font=font, anchor="rm")
        x = left + i / 5 * (right - left)
        d.text((x, bottom + 4), f"{x0 + i / 5 * (x1 - x0):.2g}", fill=ink["ink"], font=font,
               anchor="mt")
    d.rectangle([left, top, right, bottom], outline=ink["ink"])
    d.text(((left + right) / 2, h - 4), "retain direction 1", fill=ink["ink"], font=font,
           anchor="md")
    d.text((left, top - 4), "residual off the retain plane", fill=ink["ink"], font=font,
           anchor="ld")

    def mark(draw, x: float, y: float, split: str, style: str, faint: bool = False) -> None:
        colour = ink[f"faint {split}"] if faint else ink[split]
        if style == "x":
            draw.line([(x - 3, y - 3), (x + 3, y + 3)], fill=colour, width=2)
            draw.line([(x - 3, y + 3), (x + 3, y - 3)], fill=colour, width=2)
        elif style == "ring":
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], outline=colour)
        else:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)

    for name, style in _GIF_GHOST.items():
        for (x, y), p in zip(to_px(ghosts[name]), ghost_points[name], strict=True):
            if np.isfinite(x) and np.isfinite(y) and p["split"] in SPLIT_COLOURS:
                mark(d, x, y, p["split"], style, faint=True)
    styles = {"test": "ring", "retain": "dot", "forget": "x"}  # drawn in this order
    entries = [(s, s, styles[s], False) for s in ("forget", "retain", "test")]
    entries += [("retain", f"{n} model (ghost)", s, True) for n, s in _GIF_GHOST.items()]
    lx = right - 24 - max(d.textlength(e[1], font=font) for e in entries)
    d.rectangle([lx - 8, top + 2, right - 2, top + 4 + 13 * len(entries)], fill=ink["bg"],
                outline=ink["grid"])  # drawn over the ghosts; frames draw over it
    for i, (split, label, style, faint) in enumerate(entries):  # legend, top right in the axes
        y = top + 10 + 13 * i
        mark(d, lx, y, split, style, faint)
        d.text((lx + 8, y), label, fill=ink["ink"], font=font, anchor="lm")

    px = to_px(xr)  # (F, N, 2)
    order = [[i for i, s in enumerate(splits) if s == split] for split in styles]
    forget = order[-1]
    for t, frame in enumerate(frames):
        im = base.copy()
        d = ImageDraw.Draw(im)
        for i in forget:  # the forget points' path over the last three frames
            path = [tuple(p) for p in px[max(0, t - 3):t + 1, i] if np.isfinite(p).all()]
            if len(path) > 1:
                d.line(path, fill=ink["trail"])
        for split, idx in zip(styles, order, strict=True):
            for x, y in px[t, idx]:
                if np.isfinite(x) and np.isfinite(y):
                    mark(d, x, y, split, styles[split])
        # the frame number keeps every frame distinct: Pillow merges identical GIF frames
        d.text((left, 4), f"step {frame['step']} ({frame['phase']}), frame {t + 1}/"
               f"{len(frames)}", fill=ink["ink"], font=font, anchor="lt")
        yield im


def film_gif_bytes(view: dict, *, size: tuple[int, int] = (640, 480),
                   ms_per_frame: int = 120) -> bytes:
    """The film (`film.linear_view`) as an animated GIF, looping: x the starting model's retain
    direction 1, y each point's residual off the retain plane (0..1), forget points with their
    last three frames' trail, the original and retrained models' points as faint ghosts."""
    import io

    frames = list(_film_frames(view, size))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=ms_per_frame, loop=0)
    return buf.getvalue()


def film_gif(view: dict, path, *, size: tuple[int, int] = (640, 480),
             ms_per_frame: int = 120) -> Path:
    """`film_gif_bytes` written to `path`; returns the path."""
    return _written(path, film_gif_bytes(view, size=size, ms_per_frame=ms_per_frame))


def film_mp4_bytes(view: dict, *, size: tuple[int, int] = (640, 480),
                   ms_per_frame: int = 120) -> bytes:
    """The GIF's frames (`film_gif_bytes`) as an H.264 MP4 that browsers play: one video frame
    per film frame at 1000/ms_per_frame frames a second, each side rounded down to even
    (yuv420p needs it). Encoded by the ffmpeg binary imageio-ffmpeg ships; RuntimeError, in one
    line, when it cannot."""
    import tempfile

    w, h = size[0] - size[0] % 2, size[1] - size[1] % 2
    frames = _film_frames(view, (w, h))
    with tempfile.TemporaryDirectory(prefix="dimalign-mp4-") as tmp:
        # a file, not stdout: the mp4 muxer seeks back to write its index (moov) up front
        out = Path(tmp) / "film.mp4"
        _encode_mp4(frames, (w, h), ms_per_frame, out, Path(tmp) / "ffmpeg.log")
        return out.read_bytes()


def film_mp4(view: dict, path, *, size: tuple[int, int] = (640, 480),
             ms_per_frame: int = 120) -> Path:
    """`film_mp4_bytes` written to `path`; returns the path."""
    return _written(path, film_mp4_bytes(view, size=size, ms_per_frame=ms_per_frame))


def _written(path, data: bytes) -> Path:
    path = Path(path)
    path.write_bytes(data)
    return path


def _ffmpeg() -> str:
    try:
        from imageio_ffmpeg import get_ffmpeg_exe

        return get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        raise RuntimeError("cannot write MP4: imageio-ffmpeg and its ffmpeg are not installed "
                           "(pip install imageio-ffmpeg)") from None


def _encode_mp4(frames: Iterator, size: tuple[int, int], ms_per_frame: int, out: Path,
                log: Path) -> None:
    """Pipes each frame's raw RGB into ffmpeg. Its messages go to `log`, not a pipe: a pipe
    nobody reads while frames are written could fill and stall both processes."""
    import subprocess

    cmd = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}", "-framerate",
           f"1000/{ms_per_frame}", "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-movflags", "+faststart", "-y", str(out)]
    with open(log, "wb") as err:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=err)
        except OSError as e:
            raise RuntimeError(f"cannot write MP4: ffmpeg did not start ({e})") from None
        try:
            _feed(proc.stdin, frames)
        except BaseException:  # a frame failed to draw, or ^C: no ffmpeg left behind
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
    if code != 0:
        said = log.read_text(errors="replace").strip().splitlines() or ["no message"]
        raise RuntimeError(f"cannot write MP4: ffmpeg exited with status {code}: {said[-1]}")


def _feed(stdin, frames: Iterator) -> None:
    """Writes the frames, then closes stdin (ffmpeg's end of input). A broken pipe means ffmpeg
    stopped early; its exit status and log say why."""
    import contextlib

    with contextlib.suppress(BrokenPipeError):
        for im in frames:
            stdin.write(im.convert("RGB").tobytes())
    with contextlib.suppress(BrokenPipeError):
        stdin.close()


def track_figure(track: list[dict]) -> go.Figure:
    """A picked sample's residual and confidence on its label, frame by frame."""
    steps = [r["step"] for r in track]
    fig = go.Figure([go.Scatter(x=steps, y=[r["residual"] for r in track], name="residual",
                                mode="lines+markers", line_color="#E45756"),
                     go.Scatter(x=steps, y=[r["confidence"] for r in track],
                                name="confidence on its label", mode="lines+markers",
                                line_color="#4C78A8")])
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=10, b=30), yaxis_range=[0, 1.05],
                      xaxis_title="step", legend=dict(orientation="h", y=1.15))
    return fig
