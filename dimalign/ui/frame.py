"""What every page opens with: `page(title)` (app.py's frame on a deep link, the shared
sidebar, the title, the experiment's validated config and the owner), and, for the geometry
pages, the run whose saved geometry they draw."""

from __future__ import annotations

from typing import NamedTuple

import streamlit as st

from dimalign.config import DEFAULT_PRESET, Config, build_config, load_preset
from dimalign.config import preset_names as _preset_names
from dimalign.errors import ConfigError
from dimalign.store import Run
from dimalign.ui import deeplink
from dimalign.ui.runs import baselines_run, ensure_scheduler, experiment_runs, load_geometry
from dimalign.ui.state import keep, owner, remember, sticky
from dimalign.ui.widgets import pick_run


class Page(NamedTuple):
    cfg: Config  # the session's experiment: the sidebar's preset plus its settings
    who: str  # the owner id, kept in the URL


def page(title: str, *, scheduler: bool = True) -> Page:
    """A page's frame: app.py's navigation (on a deep link to a fresh server), the sidebar,
    the title. Stops the page with a message when the session's settings do not validate.
    `scheduler`: start the background scheduler unless one runs (every page shows runs: one
    that was killed is replaced, and its workers warm up while the user sets things up)."""
    deeplink.in_frame()
    cfg = sidebar_config()
    who = owner()
    st.title(title)
    if cfg is None:
        st.stop()
    if scheduler:
        ensure_scheduler()
    return Page(cfg, who)


@st.cache_data(show_spinner=False)
def preset_names() -> list[str]:
    return _preset_names()


def sidebar_config() -> Config | None:
    """Preset picker and owner in the sidebar (both kept in the URL); the validated config."""
    names = preset_names()
    wanted = sticky("preset") or DEFAULT_PRESET
    index = names.index(wanted) if wanted in names else names.index(DEFAULT_PRESET)
    who = owner()
    with st.sidebar:
        st.markdown("### dimalign")
        st.caption("Machine unlearning, seen in feature space.")
        preset = st.selectbox("Preset", names, index=index, key="preset")
        description, _ = load_preset(preset)
        st.caption(description)
        st.caption(f"You are **{who}** — bookmark this page's address to come back to your "
                   "runs.")
        formats = ["PNG", "SVG"]
        st.radio("Chart downloads", formats, horizontal=True, key="figure_format",
                 index=formats.index(st.session_state.get("_figure_format", "PNG")),
                 on_change=keep, args=("figure_format",),
                 help="What each chart's camera button saves (hover a chart to see it)")
    if st.session_state.get("overrides_for") != preset:  # settings belong to one preset
        st.session_state["overrides"], st.session_state["overrides_for"] = [], preset
        st.session_state["own_data"] = []
    remember("preset", preset)
    try:
        return build_config(preset, st.session_state.get("overrides", []))
    except ConfigError as err:
        st.error(f"These settings are invalid: {err}. Change them on the Experiment page.")
        return None


def geometry_source(cfg: Config, who: str) -> tuple[Run | None, dict | None]:
    """The run whose saved geometry a page shows: the chosen finished unlearning run, else
    the experiment's baselines (original and retrained only)."""
    runs = experiment_runs(cfg, who, statuses=("done",))
    run = pick_run(runs, done_only=True) if runs else baselines_run(cfg)
    if run is None:
        st.info("Nothing to show yet: train the baselines on the Experiment page, or run a "
                "method on the Unlearn page.")
        return None, None
    geometry = load_geometry(run)
    if geometry is None:
        st.warning(f"Run {run.id} has no saved geometry; run it again.")
    return run, geometry


def require_geometry(cfg: Config, who: str) -> tuple[Run, dict]:
    """The geometry pages' run and its saved geometry; stops the page (with geometry_source's
    message) when there is nothing to show."""
    run, geometry = geometry_source(cfg, who)
    if geometry is None:
        st.stop()
    return run, geometry
