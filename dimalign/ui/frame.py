"""What every page opens with: `page(title)` (app.py's frame on a deep link, the shared
sidebar, the title, the challenge banner, the experiment's validated config and the session's
identity), and, for the geometry pages, the run whose saved geometry they draw."""

from __future__ import annotations

from typing import NamedTuple

import streamlit as st

from dimalign.config import DEFAULT_PRESET, Config, build_config, load_preset
from dimalign.config import preset_names as _preset_names
from dimalign.errors import ConfigError
from dimalign.run_files import GEOMETRY
from dimalign.store import Run
from dimalign.ui import deeplink
from dimalign.ui.contest import banner as challenge_banner
from dimalign.ui.runs import baselines_run, ensure_scheduler, load_geometry, replicate_runs
from dimalign.ui.state import (
    Identity,
    dismiss_owner_notice,
    keep,
    owner,
    owner_notice,
    remember,
    sticky,
)
from dimalign.ui.widgets import pick_run
from dimalign.uploads import hide_server_paths


class Page(NamedTuple):
    cfg: Config  # the session's experiment: the sidebar's preset plus its settings
    who: Identity  # the owner (name and key, kept in the URL) or the instructor's view


def page(title: str, *, scheduler: bool = True, settings: bool = False,
         banner: bool = True) -> Page:
    """A page's frame: app.py's navigation (on a deep link to a fresh server), the sidebar,
    the title, a notice when the session's owner is not the one its address asked for, and
    the workshop's challenge banner (`banner`: the Room page draws its challenge itself).
    Stops the page with a message when the session's settings do not validate, except on the
    page that edits them (`settings`): that one gets a config to draw its controls from
    (`settings_error()` says what is wrong). `scheduler`: start the background scheduler
    unless one runs (every page shows runs: one that was killed is replaced, and its workers
    warm up while the user sets things up)."""
    deeplink.in_frame()
    cfg = sidebar_config()
    who = owner()
    sticky("run")  # the run the person looks at stays in the address on every page (a reload)
    st.title(title)
    notice = owner_notice()
    if notice:
        st.warning(notice, icon=":material/badge:")
        st.button("Understood", key="owner_notice_ok", on_click=dismiss_owner_notice)
    if banner:
        challenge_banner(cfg, who)
    if cfg is None:
        error = settings_error()
        if not settings:
            st.error(f"These settings are invalid: {hide_server_paths(str(error))}. Change "
                     "them on the Experiment page.")
            st.stop()
        cfg = _fallback_config()
    if scheduler:
        ensure_scheduler()
    return Page(cfg, who)


@st.cache_data(show_spinner=False)
def preset_names() -> list[str]:
    return _preset_names()


def sidebar_config() -> Config | None:
    """Preset picker and owner in the sidebar (both kept in the URL); the validated config,
    or None (and `settings_error()` says why)."""
    names = preset_names()
    wanted = sticky("preset") or DEFAULT_PRESET
    index = names.index(wanted) if wanted in names else names.index(DEFAULT_PRESET)
    who = owner()
    with st.sidebar:
        st.markdown("### dimalign")
        st.caption("Machine unlearning, seen in feature space.")
        preset = st.selectbox("Preset", names, index=index, key="preset")
        description, _ = load_preset(preset)
        st.caption("**Your own data** (set on the Experiment page), with this preset's other "
                   "settings." if st.session_state.get("own_data") else description)
        if who.admin:
            st.caption("**Instructor's view**: every owner's runs, read-only.")
        else:
            st.caption(f"You are **{who.name}** — bookmark this page's address to come back to "
                       "your runs. It carries your key: whoever has it can act as you.")
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
        cfg = build_config(preset, st.session_state.get("overrides", []))
    except ConfigError as err:
        st.session_state["_settings_error"] = err
        return None
    st.session_state["_settings_error"] = None
    return cfg


def settings_error() -> ConfigError | None:
    """What is wrong with this session's settings, if anything."""
    return st.session_state.get("_settings_error")


def _fallback_config() -> Config:
    """A config to draw the settings' controls from while they do not validate: the settings
    without the wrong key, else the preset's own."""
    preset = st.session_state.get("overrides_for") or DEFAULT_PRESET
    error = settings_error()
    wrong = error.key if error is not None else None
    kept = [o for o in st.session_state.get("overrides", [])
            if o.split("=", 1)[0].strip() != wrong]
    try:
        return build_config(preset, kept)
    except ConfigError:
        return build_config(preset, [])


def reset_settings() -> None:
    """Button callback: back to the preset's own settings (and its own data), the settings
    widgets included."""
    st.session_state["overrides"], st.session_state["own_data"] = [], []
    st.session_state["own_error"] = None
    for key in [k for k in st.session_state if str(k).startswith("exp_")]:
        del st.session_state[key]


def geometry_source(cfg: Config, who: Identity) -> tuple[Run | None, dict | None]:
    """The run whose saved geometry a page shows: the chosen finished unlearning run of any
    replicate (by default the one the session's newest action made, as on Unlearn), else the
    experiment's baselines (original and retrained only). A geometry file that cannot be read
    shows an error line (load_geometry) and gives None."""
    runs = replicate_runs(cfg, who, statuses=("done",))
    run = (pick_run(runs, done_only=True, with_owner=who.admin) if runs
           else baselines_run(cfg))
    if run is None:
        st.info("Nothing to show yet: train the baselines on the Experiment page, or run a "
                "method on the Unlearn page.")
        return None, None
    geometry = load_geometry(run)
    if geometry is None and not (run.folder / GEOMETRY).exists():
        st.warning(f"Run {run.id} has no saved geometry; run it again.")
    return run, geometry


def require_geometry(cfg: Config, who: Identity) -> tuple[Run, dict]:
    """The geometry pages' run and its saved geometry; stops the page (with geometry_source's
    message) when there is nothing to show."""
    run, geometry = geometry_source(cfg, who)
    if geometry is None:
        st.stop()
    return run, geometry
