"""Manifolds: UMAP of the models' features in one aligned frame (computed by a worker)."""

import streamlit as st

from dimalign import plots, ui
from dimalign.artifacts import load_bundle
from dimalign.checked import DamagedFile
from dimalign.data import build_experiment
from dimalign.embed import embedding_path
from dimalign.store import StoreError

cfg, who = ui.page("Manifolds")
run, geometry = ui.require_geometry(cfg, who)

limit = sum(len(v) for v in geometry["rows"].values())
sizes = [s for s in (150, 300, 600, 1200, 2400) if s <= limit] or [limit]
samples = st.select_slider("Points", sizes, value=600 if 600 in sizes else sizes[-1],
                           key="samples")
path = embedding_path(run.folder, samples)
job = None
if not path.exists():
    try:
        job = ui.job_on_run("embed", run, {"samples": samples}, who)
    except StoreError as err:
        st.error(f"{ui.said(err)}.")
        st.stop()


def _draw() -> bool:
    if not path.exists():
        return False
    try:
        fig = ui.memo_figure(("manifolds", str(path), path.stat().st_mtime),
                             lambda: plots.manifold_figure(load_bundle(path)))
    except DamagedFile:  # set aside: the next run of the page computes it again
        st.error(f"The manifold of run {run.id} ({samples} points) was damaged and set aside; "
                 "reload the page to compute it again.")
        return True
    except Exception as err:  # whatever else a damaged file makes loading raise: one line
        st.error(f"The manifold of run {run.id} ({samples} points) cannot be read "
                 f"({type(err).__name__}): its file is damaged. Pick another number of points.")
        return True
    plot, picked = st.columns([4, 1])
    event = ui.chart(fig, "manifolds", plot,
                     on_select="rerun", selection_mode="points")
    plot.caption("UMAP fitted on the retrained model's features; the other models' features "
                 "of the same samples are placed into that frame. Crosses: forget samples; "
                 "open circles: test samples. Hover for label and predictions; click a point "
                 "to see its image.")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if points and points[0].get("customdata"):
        split, label, predicted, row = points[0]["customdata"][:4]
        exp = build_experiment(cfg)
        image = (exp.x_test if split == "test" else exp.x_train)[int(row): int(row) + 1]
        picked.image(plots.image_montage(image, ncols=1), width=120)
        picked.markdown(f"**{split}** sample {row}  \nlabel {label}, predicted {predicted}")
    else:
        picked.caption("Click a point to see its image.")
    return True


if job is None:
    _draw()
else:
    @st.fragment(run_every=1.0)
    def waiting() -> None:
        if _draw():
            return
        j = ui.store().get(job)
        if j.terminal:
            ui.show_run_error(j)
        else:
            st.progress(0.5 if j.status == "running" else 0.0,
                        text=f"UMAP of {samples} points: {j.status} (the first one also "
                             "compiles UMAP, about a minute)")

    waiting()
