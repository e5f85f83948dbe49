"""The only engine module that imports streamlit: shared sidebar, owner id, store access,
knob widgets and small displays the pages share. Nothing heavy runs here: training, metrics
and UMAP are jobs; pages read their results from the store."""

from __future__ import annotations

import math
import secrets
from typing import NamedTuple

import streamlit as st

from dimalign.config import DEFAULT_PRESET, Config, build_config, load_preset
from dimalign.config import preset_names as _preset_names
from dimalign.errors import ConfigError
from dimalign.methods.base import Knob
from dimalign.store import Run, Store, StoreError, check_owner

ACTIVE = ("queued", "running")


@st.cache_data(show_spinner=False)
def preset_names() -> list[str]:
    return _preset_names()


def store() -> Store:
    """One store connection per browser session."""
    if "_store" not in st.session_state:
        st.session_state["_store"] = Store()
    return st.session_state["_store"]


def sticky(name: str) -> str | None:
    """A value kept in the URL and in the session: page switches clear the URL's query
    parameters, a reload clears the session; together they survive both."""
    value = st.query_params.get(name) or st.session_state.get(f"_sticky_{name}")
    if value:
        remember(name, value)
    return value


def remember(name: str, value: str) -> None:
    st.session_state[f"_sticky_{name}"] = value
    if st.query_params.get(name) != value:
        st.query_params[name] = value


def owner() -> str:
    """The workshop participant's id, kept in the URL so a reload keeps their runs."""
    try:
        current = sticky("owner")
        return check_owner(current) if current else _new_owner()
    except StoreError:
        return _new_owner()


def _new_owner() -> str:
    name = f"guest-{secrets.token_hex(3)}"
    remember("owner", name)
    return name


def ensure_scheduler() -> None:
    """Start the background scheduler if none runs: a lock-file check, cheap enough for every
    call (one stops after ten idle minutes, so a session cannot check just once)."""
    from dimalign.jobs import ensure_scheduler as start

    start()


def _in_frame() -> None:
    """A fresh server's first visitor on a deep link (/manifolds?owner=...) gets the page run by
    Streamlit's legacy pages/ mode, without app.py's frame (page links named after files, no
    wide layout), and that mode then sticks until someone opens the main page. Turn it off and
    rerun: the rerun goes through app.py's st.navigation to the same page."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def sidebar_config() -> Config | None:
    """Preset picker and owner in the sidebar (both kept in the URL); the validated config."""
    _in_frame()
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
                 on_change=_keep, args=("figure_format",),
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


def _keep(key: str) -> None:
    """Copy a widget's value where a page switch does not clear it (widgets belong to a page)."""
    st.session_state[f"_{key}"] = st.session_state[key]


def memo_figure(identity: tuple, build):
    """A figure built once per `identity` in this session: plotly validates every array as a
    figure is built (~0.25 s for the manifolds), and page switches redraw unchanged data."""
    memo = st.session_state.setdefault("_figures", {})
    if identity not in memo:
        if len(memo) >= 16:
            memo.pop(next(iter(memo)))
        memo[identity] = build()
    return memo[identity]


def chart(fig, key: str, where=None, **kwargs):
    """A plotly chart whose camera button saves it as PNG or SVG (the sidebar's choice), in the
    browser, named after the chart."""
    fmt = str(st.session_state.get("_figure_format", "PNG")).lower()
    config = {"displaylogo": False,
              "toImageButtonOptions": {"format": fmt, "filename": f"dimalign-{key}",
                                       "scale": 2 if fmt == "png" else 1}}
    return (where or st).plotly_chart(fig, key=key, config=config, **kwargs)


def geometry_source(cfg: Config, who: str) -> tuple[Run | None, dict | None]:
    """The run whose saved geometry a page shows: the chosen finished unlearning run, else
    the experiment's baselines (original and retrained only)."""
    runs = [r for r in experiment_runs(cfg, who) if r.status == "done"]
    run = pick_run(runs, done_only=True) if runs else baselines_run(cfg)
    if run is None:
        st.info("Nothing to show yet: train the baselines on the Experiment page, or run a "
                "method on the Unlearn page.")
        return None, None
    geometry = load_geometry(run)
    if geometry is None:
        st.warning(f"Run {run.id} has no saved geometry; run it again.")
    return run, geometry


def geometry_page(title: str) -> tuple[Config, str, Run, dict]:
    """The shared top of the geometry pages: sidebar, title, the run and its saved geometry
    (stops the page with a message when there is nothing to show)."""
    cfg = sidebar_config()
    who = owner()
    st.title(title)
    if cfg is None:
        st.stop()
    run, geometry = geometry_source(cfg, who)
    if geometry is None:
        st.stop()
    return cfg, who, run, geometry


# ---------------------------------------------------------------------------- runs


def experiment_key(cfg: Config) -> str:
    from dimalign.jobs import baselines_key

    return baselines_key(cfg)


def baselines_run(cfg: Config) -> Run | None:
    """The newest finished baselines job of this experiment (any owner: they are shared)."""
    return _baselines(cfg, ("done",))


def active_baselines(cfg: Config) -> Run | None:
    return _baselines(cfg, ACTIVE)


def _baselines(cfg: Config, statuses: tuple[str, ...]) -> Run | None:
    key = experiment_key(cfg)
    return next((run for run in store().runs(kind="baselines", statuses=statuses)
                 if run.share_key == key), None)


_RUN_KEYS: dict[str, str | None] = {}  # run id -> its experiment key (a run's config is fixed)


def _run_key(run: Run) -> str | None:
    if run.id not in _RUN_KEYS:
        from dimalign.config import config_from_dict

        try:
            _RUN_KEYS[run.id] = experiment_key(config_from_dict(run.config))
        except ConfigError:
            _RUN_KEYS[run.id] = None
    return _RUN_KEYS[run.id]


def experiment_runs(cfg: Config, who: str | None = None) -> list[Run]:
    """Unlearning runs of this experiment (same data, scenario, model, baselines)."""
    key = experiment_key(cfg)
    return [run for run in store().runs(kind="unlearn", owner=who) if _run_key(run) == key]


def run_label(run: Run) -> str:
    return f"{run.id} · {run.method} · {run.status}" + (
        f" · fork of {run.parent_id}" if run.parent_id else "")


def pick_run(runs: list[Run], key: str = "run", done_only: bool = False) -> Run | None:
    """A run picker remembered in the URL (so a reload re-attaches to it)."""
    choices = [r for r in runs if r.status == "done"] if done_only else runs
    if not choices:
        return None
    ids = [r.id for r in choices]
    wanted = sticky("run")
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox("Run", ids, index=index, key=key,
                          format_func=lambda i: run_label(next(r for r in choices if r.id == i)))
    remember("run", chosen)
    return next(r for r in choices if r.id == chosen)


def load_geometry(run: Run) -> dict | None:
    path = run.folder / "geometry.pt"
    return _cached_bundle(str(path), path.stat().st_mtime) if path.exists() else None


@st.cache_resource(show_spinner=False, max_entries=16)  # shared, read-only: no copy per run
def _cached_bundle(path: str, mtime: float) -> dict:
    from dimalign.artifacts import load_bundle

    return load_bundle(path)


def show_run_error(run: Run) -> None:
    hints = {"failed": "Change the settings that the message names (often a lower learning "
                       "rate or loss weight) and run again.",
             "interrupted": "Its worker stopped. Resume it to continue from its last "
                            "checkpoint.",
             "cancelled": "It was cancelled; run it again when you want it."}
    if run.status in hints:
        st.error(f"Run {run.id} {run.status}: {run.error or 'no message'}. {hints[run.status]}")


# ---------------------------------------------------------------------------- knob widgets


def _log_grid(knob: Knob) -> list[float]:
    low = knob.low if knob.low is not None and knob.low > 0 else 1e-6
    high = knob.high if knob.high is not None else 1e3
    values = {knob.default}
    if knob.low == 0 and not knob.low_open:
        values.add(0.0)
    for exp in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            v = float(f"{mantissa}e{exp}")
            if low <= v <= high:
                values.add(v)
    return sorted(values)


def knob_widget(method: str, name: str, knob: Knob, value, disabled: bool = False):
    """A slider (or picker) for one knob; its key is stable, so tests find it."""
    key = f"knob_{method}_{name}"
    label = f"{name}"
    help_text = knob.help + (f" — {knob.source}" if knob.source != "choice" else "")
    if knob.type is bool:
        return st.checkbox(label, value=bool(value), key=key, help=help_text, disabled=disabled)
    if knob.type is str:
        return st.selectbox(label, knob.choices, index=knob.choices.index(value), key=key,
                            help=help_text, disabled=disabled)
    if knob.type is int:  # a slider over a useful span: up to 4x the default, at least 50
        low = int(knob.low or 0)
        high = int(min(knob.high if knob.high is not None else 10**6,
                       max(50, 4 * int(knob.default), int(value))))
        return st.slider(label, low, high, int(value), key=key, help=help_text,
                         disabled=disabled)
    if knob.high is not None and knob.high <= 1 and knob.default >= 0.05:  # a fraction
        return st.slider(label, 0.01 if knob.low_open else float(knob.low or 0), 1.0,
                         float(value), step=0.01, key=key, help=help_text, disabled=disabled)
    grid = _log_grid(knob)
    if value not in grid:
        grid = sorted({*grid, value})
    return st.select_slider(label, grid, value=value, key=key, help=help_text,
                            format_func=lambda v: f"{v:g}", disabled=disabled)


# ---------------------------------------------------------------------------- steering


def knob_groups(method: str, spec, params: dict) -> dict:
    """Every knob's widget, by group: the first group open, the others in expanders."""
    values = {}
    for i, (group, names) in enumerate(spec.groups()):
        where = st.container() if i == 0 else st.expander(group)
        if i == 0:
            where.markdown(f"**{group}**")
        cols = where.columns(4)
        for j, name in enumerate(names):
            with cols[j % 4]:
                values[name] = knob_widget(method, name, spec.knobs[name], params[name])
    return values


def knobs_moved(auto: bool, signature: tuple) -> bool:
    """True once per change of the knobs while *Run on change* is on (switching it on, or
    the first draw, only records the knobs)."""
    before = st.session_state.get("_auto_signature")
    st.session_state["_auto_signature"] = signature
    return auto and before is not None and before != signature


def start_run(preset: str, overrides: list[str], method: str, who: str,
              parent_id: str | None = None, supersede: bool = False) -> None:
    """Queue a run (a fork when `parent_id`), show it, and redraw. `supersede`: an automatic
    run, which cancels this session's previous automatic run if it is still going."""
    from dimalign.jobs import cancel, submit

    new = submit(store(), preset=preset, overrides=overrides, method=method, owner=who,
                 parent_id=parent_id)
    ensure_scheduler()
    if supersede:
        previous = st.session_state.get("_auto_run")
        if previous and store().get(previous).status in ACTIVE:
            cancel(store(), previous)
        st.session_state["_auto_run"] = new
    remember("run", new)
    st.rerun()


class Ghost(NamedTuple):
    """An earlier run drawn faintly under the chosen one, named by what it changed."""

    run: Run
    label: str


def ghost_runs(runs: list[Run], selected: Run, count: int = 5) -> list[Ghost]:
    """This owner's last `count` runs of the experiment besides the chosen one (queued runs
    have nothing to draw yet)."""
    from dimalign.config import config_from_dict
    from dimalign.steer import ghost_label, knob_changes

    chosen = config_from_dict(selected.config)
    out = []
    for run in runs:
        if run.id == selected.id or run.status == "queued":
            continue
        changes = knob_changes(config_from_dict(run.config), chosen, run.method, selected.method)
        out.append(Ghost(run, ghost_label(changes, run.id)))
        if len(out) == count:
            break
    return out


def result_table(run: Run, ghosts: list[Ghost]) -> None:
    """The chosen run's three models, then the ghosts' unlearned models, on the same metrics."""
    from dimalign.metric_table import shown

    keys = shown("unlearn")
    models = run.result["models"]
    rows = [{"model": m, **{k: models[m].get(k) for k in keys}} for m in models]
    rows += [{"model": f"ghost {g.label}", **{k: g.run.result["models"]["unlearned"].get(k)
                                              for k in keys}}
             for g in ghosts if g.run.status == "done" and g.run.result]
    st.dataframe(rows, hide_index=True, key="result_table")


def effect_panel(runs: list[Run]) -> None:
    """The last two finished runs side by side: what the last change did."""
    from dimalign.config import config_from_dict
    from dimalign.steer import effect, knob_changes

    done = [r for r in runs if r.status == "done" and r.result][:2]
    if len(done) < 2:
        return
    newer, older = done
    changes = knob_changes(config_from_dict(older.config), config_from_dict(newer.config),
                           older.method, newer.method)
    st.markdown(f"**Effect** of {', '.join(changes) or 'a rerun with the same knobs'} "
                f"({older.id} → {newer.id})")
    rows = effect(newer.result["models"]["unlearned"], older.result["models"]["unlearned"])
    for col, row in zip(st.columns(len(rows)), rows, strict=True):
        color = "off" if row["better"] is None else (
            "normal" if (row["better"] == (row["delta"] > 0)) else "inverse")
        col.metric(row["title"], "–" if row["after"] is None else f"{row['after']:.3f}",
                   None if row["delta"] is None else f"{row['delta']:+.3f}",
                   delta_color=color)


def use_own_data(root: str, size: int, model: str, checkpoint: str) -> None:
    """Button callback: switch this session's experiment to an image folder / model /
    checkpoint (all empty: back to the preset's data). Checked first: bad input leaves an
    error for the page to show and changes nothing."""
    own = []
    if root.strip():
        own += ["dataset=imagefolder", f"dataset_root={root.strip()}", f"image_size={size}",
                "scenario.kind=class", "scenario.classes=0"]
    if model.strip() and model.strip() != "auto":
        own.append(f"model={model.strip()}")
    if checkpoint.strip():
        own.append(f"original_checkpoint={checkpoint.strip()}")
    try:
        build_config(sticky("preset") or DEFAULT_PRESET, own)
    except ConfigError as err:
        st.session_state["own_error"] = f"Not used: {err}"
        return
    st.session_state["own_error"] = None
    st.session_state["own_data"], st.session_state["overrides"] = own, list(own)
