"""Our one Streamlit component: views linked in the browser, drawn with plotly.js, that
st.plotly_chart cannot do without a round trip to the server per hover or frame: the film
player (Unlearn), the three linked panels (Manifolds) and the DA playground (Learn).

The browser side is ours (`linked/index.html`, `linked/linked.js`, the components v1
postMessage protocol written by hand); plotly.js is the installed plotly package's own
`plotly.min.js`, not kept in git. Streamlit serves a component from one folder, so the first
use builds `home/components/linked-<hash>/` from the two (the hash names their contents, so an
upgrade of either builds a new folder). Built at first use rather than at import: importing
the dashboard writes nothing, and the home is the one the server runs with.

Also here, the small readers these views need: a run's film as the player's payload, and the
image of one sample of an experiment.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from dimalign.config import Config
from dimalign.paths import home
from dimalign.run_files import FILM, FILM_PENDING, FILM_UMAP
from dimalign.store import Run

SOURCE = Path(__file__).with_name("linked")  # our files, committed
OURS = ("index.html", "linked.js", "playground.js")
PLOTLY_JS = "plotly.min.js"


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / PLOTLY_JS


def component_folder() -> Path:
    """`home/components/linked-<hash>/`: our files and plotly.min.js (hardlinked, else
    copied), built in a temporary folder and renamed into place. Two servers starting at once
    may both build it: the first rename wins, the other's folder is thrown away."""
    import plotly

    js, digest = plotly_js(), hashlib.sha256(plotly.__version__.encode())
    for name in OURS:
        digest.update((SOURCE / name).read_bytes())
    digest.update(str(js.stat().st_size).encode())
    folder = home() / "components" / f"linked-{digest.hexdigest()[:16]}"
    if folder.is_dir():  # a rename made it: it is whole
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for name in OURS:
            shutil.copyfile(SOURCE / name, tmp / name)
        try:
            os.link(js, tmp / PLOTLY_JS)  # 4.8 MB: no copy when the home shares the disk
        except OSError:
            shutil.copyfile(js, tmp / PLOTLY_JS)
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide it from a server run as another user
        try:
            os.rename(tmp, folder)
        except OSError:  # another process renamed its copy first (the folder is not empty)
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@functools.cache
def _folder() -> str:
    return str(component_folder())


def _component(kind: str, payload: dict, key: str):
    from streamlit.components.v1 import declare_component

    # declared on each call, so it is registered with the runtime serving this script run
    # (a server started again, a test's AppTest); the same name and folder again is a no-op
    return declare_component("linked", path=_folder())(kind=kind, payload=payload, key=key,
                                                        default=None)


def film_player(payload: dict, key: str) -> dict | None:
    """The film of a run (`linked_data.film_payload`): 2-D (or 3-D) points moving frame by
    frame with trails, ghosts, play, a step slider and a curves strip that scrubs. Returns
    what the person did last: {"frame": i (on pause or scrub end), "clicked": sample id,
    "lasso": [ids]}, or None before anything."""
    from dimalign.linked_data import for_browser

    return _component("film", for_browser(payload), key)


def linked_panels(payload: dict, key: str) -> dict | None:
    """Manifolds' three panels (`linked_data.manifold_payload`): hovering a sample rings it in
    every panel, a lasso selects the same samples in all three. Returns {"clicked": {"split",
    "label", "predicted", "row", "model"}} after a click, else None."""
    return _component("panels", payload, key)


def playground(key: str, seed: int = 28) -> None:
    """Learn's DA playground (`linked/playground.js`): seeded retain and forget clouds whose
    DA, principal angles and retain eigenvectors answer each slider move in the browser."""
    _component("playground", {"seed": seed}, key)


def load_film(run: Run, frame: int | None = None, umap: bool = False,
              seek: dict | None = None) -> dict | None:
    """The run's film as the player draws it (`linked_data.film_payload`), with its curves
    strip; None while it has no film (none recorded, or no frame written yet), or, with `umap`,
    while its aligned UMAP (a film_umap job's file) is not there. Files are read again only
    when their mtime moves (a live run rewrites its film at most once a second), the curves
    only when the run's store version does. `seek`: a step picked on the live curves."""
    from dimalign.linked_data import film_payload
    from dimalign.ui.state import store

    path, placed = run.folder / FILM, run.folder / FILM_UMAP
    try:
        arrays = _film_arrays(str(path), path.stat().st_mtime,
                              placed.stat().st_mtime if umap else None)
    except FileNotFoundError:
        return None
    if not arrays["steps"]:
        return None
    return film_payload(arrays, _curves(run.id, store().version(run.id)), frame, seek)


def _curves(run_id: str, version: tuple) -> dict:
    """The run's curves, read from the store once per version of the run (per session)."""
    from dimalign.ui.state import store

    memo = st.session_state.setdefault("_film_curves", {})
    if memo.get(run_id, (None,))[0] != version:
        memo[run_id] = (version, store().curves(run_id))
    return memo[run_id][1]


@st.cache_resource(show_spinner=False, max_entries=8)  # shared and read-only, like geometry
def _film_arrays(path: str, mtime: float, umap_mtime: float | None) -> dict:
    from dimalign.artifacts import load_bundle
    from dimalign.film import arrays

    bundle = load_bundle(Path(path))
    if umap_mtime is None:
        return arrays(bundle)
    from dimalign.film_umap import umap_arrays

    return umap_arrays(bundle, load_bundle(Path(path).with_name(FILM_UMAP)))


def film_frames_left(run: Run) -> bool:
    """Whether the run's film job still has frames to measure: `methods.film.frames_left`'s
    rule, with the film read through the page's cache (a waiting page asks every second)."""
    if not (run.folder / FILM_PENDING).exists():
        return False
    path = run.folder / FILM
    try:
        return bool(_film_arrays(str(path), path.stat().st_mtime, None)["pending"])
    except FileNotFoundError:
        return True


FILM_FORMATS = {"gif": ("GIF", "image/gif"), "mp4": ("MP4", "video/mp4"),
                "html": ("HTML", "text/html")}


def film_downloads(run: Run) -> dict:
    """A finished run's film to take away, per format (FILM_FORMATS): an animated GIF, an
    MP4 video and a self-contained HTML animation (the linear view). Each is made when its
    button is clicked (a callable, where Streamlit takes one) and once per film file."""
    path = run.folder / FILM
    stamp = (str(path), path.stat().st_mtime)
    made = {fmt: functools.partial(_film_file, *stamp, fmt) for fmt in FILM_FORMATS}
    return made if _deferred_downloads() else {fmt: make() for fmt, make in made.items()}


def _deferred_downloads() -> bool:
    """st.download_button takes a callable for its data from Streamlit 1.52 on."""
    from packaging.version import Version

    return Version(st.__version__) >= Version("1.52")


@st.cache_resource(show_spinner=False, max_entries=6)
def _film_file(path: str, mtime: float, fmt: str) -> bytes:
    from dimalign.artifacts import load_bundle
    from dimalign.film import linear_view
    from dimalign.plots import film_figure, film_gif_bytes, film_mp4_bytes

    view = linear_view(load_bundle(Path(path)))
    if fmt == "html":
        return film_figure(view).to_html(include_plotlyjs=True, full_html=True).encode()
    return (film_gif_bytes if fmt == "gif" else film_mp4_bytes)(view)


def sample_image(cfg: Config, split: str, row: int) -> np.ndarray:
    """One sample of the experiment (a test row for split "test", else a train row) as an
    RGB image for st.image."""
    from dimalign.data import build_experiment
    from dimalign.plots import image_montage

    exp = build_experiment(cfg)  # its arrays are cached in-process
    images = exp.x_test if split == "test" else exp.x_train
    return image_montage(images[int(row): int(row) + 1], ncols=1)


def manifold_panels(path: Path) -> dict:
    """The aligned embedding saved at `path` as `linked_panels` draws it (read again only
    when its mtime moves). DamagedFile, as `load_bundle`, when the file is damaged."""
    return _manifold(str(path), Path(path).stat().st_mtime)


@st.cache_resource(show_spinner=False, max_entries=8)
def _manifold(path: str, mtime: float) -> dict:
    from dimalign.artifacts import load_bundle
    from dimalign.linked_data import manifold_payload

    return manifold_payload(load_bundle(Path(path)))


def show_film_sample(run: Run, film: dict, sample_id: int) -> None:
    """A film sample the person clicked: its image and label, its confidence on its label and
    residual under each model, and its track frame by frame (a chart and a table)."""
    import pandas as pd

    from dimalign.config import config_from_dict
    from dimalign.linked_data import sample_models, sample_track
    from dimalign.plots import track_figure
    from dimalign.ui.widgets import chart

    if sample_id not in film["ids"]:  # a click on an earlier film of another sample set
        return
    i = film["ids"].index(sample_id)
    split, row, label = film["splits"][i], film["rows"][i], film["labels"][i]
    picture, models = st.columns([1, 4])
    picture.image(sample_image(config_from_dict(run.config), split, row), width=96)
    picture.markdown(f"**{split}** sample {row}  \nlabel {label}")
    models.dataframe(pd.DataFrame(sample_models(film, i)), hide_index=True,
                     column_config={"confidence": st.column_config.NumberColumn(
                         "confidence on its label", format="%.3f"),
                         "residual": st.column_config.NumberColumn(format="%.3f")})
    track = sample_track(film, i)
    plot, numbers = st.columns([3, 2])
    chart(track_figure(track), f"film_track_{run.id}", plot)
    numbers.dataframe(pd.DataFrame(track), hide_index=True, height=220,
                      column_config={k: st.column_config.NumberColumn(format="%.3f")
                                     for k in ("residual", "confidence")})
