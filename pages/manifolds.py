"""Manifolds: UMAP of the models' features in one aligned frame (computed by a worker)."""

import streamlit as st

from dimalign import ui
from dimalign.checked import DamagedFile
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
        panels = ui.manifold_panels(path)
    except DamagedFile:  # set aside: the next run of the page computes it again
        st.error(f"The manifold of run {run.id} ({samples} points) was damaged and set aside; "
                 "reload the page to compute it again.")
        return True
    except Exception as err:  # whatever else a damaged file makes loading raise: one line
        st.error(f"The manifold of run {run.id} ({samples} points) cannot be read "
                 f"({type(err).__name__}): its file is damaged. Pick another number of points.")
        return True
    plot, picked = st.columns([4, 1])
    with plot:  # hover and selection are linked across the panels in the browser
        event = ui.linked_panels(panels, key=f"manifolds_{run.id}_{samples}")
    plot.caption("UMAP fitted on the retrained model's features; the other models' features "
                 "of the same samples are placed into that frame. Crosses: forget samples; "
                 "open circles: test samples. Hover a point: the same sample is ringed in "
                 "every panel; a lasso (or box) in one panel selects the same samples in all "
                 "three. Click a point to see its image.")
    clicked = (event or {}).get("clicked")
    if clicked:
        split, row = clicked["split"], int(clicked["row"])
        picked.image(ui.sample_image(cfg, split, row), width=120)
        picked.markdown(f"**{split}** sample {row}  \nlabel {clicked['label']}, predicted "
                        f"{clicked['predicted']} ({clicked['model']})")
    else:
        picked.caption("Click a point to see its image.")
    return True


if job is None:
    _draw()
else:
    ui.wait_for_job(job, path.exists, f"UMAP of {samples} points",
                    " (the first one also compiles UMAP, about a minute)")
