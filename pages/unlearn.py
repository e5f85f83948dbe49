"""Unlearn (live): pick a method, set its knobs, run it in the background and watch it. With
*Run on change*, releasing a knob runs again; the last runs stay on the charts as ghosts. While
a challenge is open, *Submit this run* enters a finished run of one's own in it."""

import contextlib

import streamlit as st

from dimalign import plots, ui
from dimalign.errors import ConfigError
from dimalign.methods import ORDER, REGISTRY
from dimalign.metric_table import shown
from dimalign.run_files import FILM_PENDING, FILM_UMAP
from dimalign.store import StoreError

cfg, who = ui.page("Unlearn (live)", scheduler=True)  # workers warm up while knobs are set

methods = [m for m in ORDER if REGISTRY[m].trains]
method = st.selectbox("Method", methods, index=methods.index("muda"), key="method",
                      format_func=lambda m: f"{REGISTRY[m].title} — {REGISTRY[m].description}")
spec = REGISTRY[method]
st.caption(f"Paper: {spec.paper}")

values = ui.knob_groups(method, spec, cfg.methods.get(method, {}))


def _settings(knobs: dict) -> list[str]:
    return [f"{method}.{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in knobs.items()]


changed = _settings(spec.differences(values))
overrides = st.session_state.get("overrides", []) + changed
preset = ui.sticky("preset")
if who.admin:  # the instructor's view: everyone's runs, nothing to start, cancel or fork
    st.info("Instructor's view: every owner's runs of this experiment, read-only.")
    auto = False
else:
    auto = st.toggle("Run on change", key="auto_run",
                     help="Releasing a knob runs the method again with the new values, and "
                          "cancels your previous automatic run if it is still queued or running")


def _press(action: str, run_id: str | None = None) -> None:  # a button's callback
    st.session_state["_press"] = (action, run_id)


def _enter(run_id: str, who: ui.Identity) -> None:  # *Submit this run*'s callback
    """Enter the run here, before the page is drawn: the banner under the title then shows
    the new standing in this very draw (the store checks the key, the run, the challenge)."""
    try:
        title = ui.enter_challenge(run_id, who).title
        said = ("success", f"Run {run_id} entered in the challenge *{title}*: your standing "
                           "is in the banner above.")
    except (ConfigError, StoreError) as err:
        said = ("error", f"Not entered: {ui.said(err)}.")
    st.session_state["_entered"] = said


# Every action is taken here, before the run picker is drawn, so this very draw shows the run
# it made; a press is taken here too, with this draw's knobs (its callback would hold the knobs
# of the draw before, which a knob released just before the press may have changed).
action, run_id = st.session_state.pop("_press", (None, None))
moved = ui.knobs_moved(auto, (preset, method, tuple(overrides)))  # records them every draw
try:
    if action == "run":
        ui.start_run(preset, overrides, method, who)
    elif action == "fork":  # every knob as shown: the parent's may hold other values
        ui.start_run(preset, _settings(values), method, who, parent_id=run_id)
    elif action == "resume":
        ui.resume_run(run_id, who)
    elif action == "cancel":
        ui.cancel_run(run_id, who)  # the engine checks the key
    elif moved:
        ui.start_run(preset, overrides, method, who, supersede=True)
except (ConfigError, StoreError) as err:
    verb = {"fork": "forked", "resume": "resumed", "cancel": "cancelled"}.get(action, "started")
    st.error(f"Not {verb}: {ui.said(err)}." + ("" if action in ("resume", "cancel") else
                                      " Change that setting and try again."))
if entered := st.session_state.pop("_entered", None):  # *Submit this run*, taken in `_enter`
    (st.success if entered[0] == "success" else st.error)(entered[1])

# every replicate's runs (a sweep's or a Compare page's): each has its own baselines
runs = ui.replicate_runs(cfg, who)  # newest first
selected = ui.pick_run(runs, key="run", with_owner=who.admin) if runs else None
status = selected.status if selected is not None else None
if not who.admin:
    b_run, b_cancel, b_fork, b_enter = st.columns([1, 1, 2, 2])
    b_run.button("Run", type="primary", key="run_button", on_click=_press, args=("run",))
    if status in ("running", "done"):
        b_fork.button("Fork from here", key="fork_button", on_click=_press,
                      args=("fork", selected.id),
                      help="Continue from this run's current weights with the knobs above")
    if status in ("interrupted", "failed", "cancelled") and selected.owner == who.name:
        b_cancel.button("Resume", key="resume_button", on_click=_press,
                        args=("resume", selected.id),
                        help="Queue it again: it continues from its last checkpoint")
    if status in ("queued", "running"):
        b_cancel.button("Cancel", key="cancel_button", on_click=_press,
                        args=("cancel", selected.id))
    challenge = ui.current_challenge()
    if status == "done" and selected.owner == who.name and challenge and challenge.open:
        done = selected.id in ui.challenge_entries(challenge).ids
        b_enter.button("Entered ✔" if done else "Submit this run", key="enter_button",
                       on_click=_enter, args=(selected.id, who), disabled=done,
                       help=f"Enter this run in the challenge {challenge.title!r} (the banner "
                            "above says what it asks)")

if selected is None:
    st.info("No runs of this experiment yet." if who.admin else
            "No runs yet for this experiment. Set the knobs and press Run (or switch on *Run "
            "on change* and move a knob): the run trains in the background and its curves "
            "appear here as it goes.")
    # the empty panels: the browser loads its charting code now, not while the first run
    # ends (which put the first "done" up to a second behind the store)
    ui.chart(ui.memo_figure(("curves", "empty"), lambda: plots.telemetry_figure({})),
             "curves_empty")
    st.stop()

# reference lines: the baselines job's evaluation, else any finished run of this experiment,
# of the chosen run's own replicate (each replicate has its own baselines)
replicate = int(selected.config.get("replicate", 0))
evaluated = ui.baselines_run(cfg.with_replicate(replicate)) or next(
    (r for r in runs if r.status == "done" and r.result
     and int(r.config.get("replicate", 0)) == replicate), None)
references = {m: v for m, v in (evaluated.result or {}).get("models", {}).items()
              if m in ("original", "retrained")} if evaluated else {}
ghosts = ui.ghost_runs(runs, selected)
floor = ui.noise_floor(cfg, shown("unlearn"))  # None until two replicates have finished
mine = [r for r in runs if r.owner == selected.owner]  # newest first
# the Effect of the run shown against the finished run before it (of the newest two while the
# run shown has not finished)
shown_at = next(i for i, r in enumerate(mine) if r.id == selected.id)
ui.effect_panel(mine[shown_at:] if selected.status == "done" else mine)


def _status_line(run) -> None:
    if run.status == "queued":
        pos = ui.queue_place(run)
        wait = f", waiting for its baselines ({run.depends_on})" if run.depends_on else ""
        ahead = ("the next of your runs to start" if not pos or pos == 1
                 else f"{pos - 1} of your runs ahead of it")
        st.info(f"Queued: {ahead} (owners take turns for free workers){wait}.")
    elif run.status == "running":
        st.progress(run.progress or 0.0, text=f"{run.phase or 'running'} — {run.id}")
    elif run.status == "done":
        st.success(f"Run {run.id} done.")
    else:
        ui.show_run_error(run)


def _curves(run_id: str) -> None:
    store = ui.store()
    version = store.version(run_id)  # the curves are read again only when this moves
    if version[0] == "queued":  # nothing to draw yet: a chart would only cost the browser
        return
    fig = ui.memo_figure(
        ("curves", run_id, version, str(references), tuple(g.run.id for g in ghosts)),
        lambda: plots.telemetry_figure(store.curves(run_id), references,
                                       ghosts=[(g.label, store.curves(g.run.id)) for g in ghosts],
                                       pickable=True))
    event = ui.chart(fig, f"curves_{run_id}", on_select="rerun", selection_mode="points")
    subset = cfg.unlearn.telemetry_samples
    st.caption(f"The curves are measured as the run goes, on a fixed {subset}-sample subset "
               "of each split (`unlearn.telemetry_samples`): they show the trend. The "
               "retrained (dashed) and original (dotted) lines and the result table are "
               "measured on the whole evaluation sets, so a curve's last point can sit a "
               "little off the table's value.")
    _seek_to(run_id, event)


def _seek_to(run_id: str, event) -> None:
    """A step clicked on the curves (an unseen marker on each panel's first curve): the film
    shows its nearest frame, once per new click."""
    points = [p for p in ((event or {}).get("selection") or {}).get("points", [])
              if p.get("x") is not None]
    seek = st.session_state.get(f"seek_{run_id}")
    if not points:  # nothing selected (a second click deselects): the same step may come again
        if seek is not None:
            seek["picked"] = None
        return
    picked = (points[0]["x"], points[0].get("curve_number"), points[0].get("point_index"))
    if seek is None or seek["picked"] != picked:
        nonce = (seek or {}).get("nonce", 0) + 1
        st.session_state[f"seek_{run_id}"] = {"step": picked[0], "nonce": nonce,
                                               "picked": picked}


def _film(run, finished: bool = False) -> None:
    """The run's film, once it has a frame (live: the worker rewrites it as it goes); a click
    on a sample shows it below. A finished run's film can be seen in aligned UMAP (a job) and
    taken away as a GIF or an HTML animation."""
    def frame(key: str) -> int | None:  # the frame the person last paused or scrubbed to
        return (st.session_state.get(key) or {}).get("frame")

    key = f"film_{run.id}_linear"
    film = ui.load_film(run, frame(key), seek=st.session_state.get(f"seek_{run.id}"))
    if finished and (run.folder / FILM_PENDING).exists() and (film is None or film["pending"]):
        # frames the run left for its film job (on a Ray head the kept file outlives the job)
        job = ui.latest_job("film", run, {})  # the one the run queued as it ended
        if job is None or job.status == "done":  # none yet (an older run, queueing failed),
            # or one done before these frames were kept: queue one (a failed one is shown)
            with contextlib.suppress(StoreError):  # measured meanwhile: nothing to do
                ui.job_on_run("film", run, {}, who)
            job = ui.latest_job("film", run, {})
        if job is not None and ui.film_frames_left(run):
            st.subheader("Film")
            ui.wait_for_job(job.id, lambda: not ui.film_frames_left(run),
                            "Recording the film's last frames",
                            " (the run left them for after it, to be done sooner)")
            return
        film = ui.load_film(run, frame(key), seek=st.session_state.get(f"seek_{run.id}"))
    if film is None:
        return
    st.subheader("Film")
    umap = finished and st.radio(
        "Projection", ["linear", "aligned UMAP"], horizontal=True, key="film_projection",
        help="linear: what DA measures, live while the run trains. Aligned UMAP: fitted once "
             "on the original and retrained models' features, every frame placed into it "
             "(a background job, a few seconds)") == "aligned UMAP"
    if umap and not (run.folder / FILM_UMAP).exists():
        _film_umap_job(run)
        return
    if umap:
        key = f"film_{run.id}_umap"
        film = ui.load_film(run, frame(key), umap=True, seek=st.session_state.get(f"seek_{run.id}"))
    st.caption(("Each frame places the film's samples into one UMAP frame fitted on the "
                "original and retrained models' features (the faint layers). " if umap else
                "The forget samples' penultimate features, frame by frame. Across: the "
                "starting model's top retain direction; up: the distance off the retain plane "
                "(the share of a feature outside the retain eigenspace). Forgetting is the "
                "forget samples falling to 0. Faint: the original and retrained models' "
                "features. ") + "Play, scrub, hover a step on the curves below it, or click a "
                "step on the live curves above.")
    event = ui.film_player(film, key)
    if finished:
        files = ui.film_downloads(run)
        for column, (fmt, (name, mime)) in zip(st.columns([1, 1, 1, 3]),
                                              ui.FILM_FORMATS.items(), strict=False):
            column.download_button(f"Film as {name}", files[fmt],
                                   f"dimalign-film-{run.id}.{fmt}", mime, key=f"film_{fmt}")
    if event and event.get("clicked") is not None:
        ui.show_film_sample(run, film, event["clicked"])


def _film_umap_job(run) -> None:
    try:
        job = ui.job_on_run("film_umap", run, {}, who)
    except StoreError as err:
        st.error(f"{ui.said(err)}.")
        return
    ui.wait_for_job(job, (run.folder / FILM_UMAP).exists, "Aligned UMAP of the film",
                    " (the first one on a machine also compiles UMAP, about a minute)")


# s: the status line's check, one indexed query (the curves redraw each 1 s). A queued run is
# looked at less often: in a room of 20 most runs wait, and 20 pages each checking 4 times a
# second took the server's core from the worker that would end their wait
STATUS_EVERY = {"queued": 1.0, "running": 0.25}

if selected.status in ("queued", "running"):
    st.session_state.pop("_redraw", None)

    @st.fragment(run_every=STATUS_EVERY[selected.status])
    def live_status() -> None:
        # the picker and the buttons above were drawn for the status the run had then (Cancel
        # while running, Fork once it runs): a new status redraws the whole page. An ending is
        # shown here first, at once, and the whole page (table, ghosts, Effect) follows a tick
        # later.
        if st.session_state.pop("_redraw", None) == selected.id:
            st.rerun()
        run = ui.store().get(selected.id)
        if run.status != selected.status and not run.terminal:
            st.rerun()
        _status_line(run)
        if run.terminal:
            st.session_state["_redraw"] = selected.id

    @st.fragment(run_every=1.0)
    def live_curves() -> None:
        _curves(selected.id)
        _film(selected)

    live_status()
    if selected.status == "running":  # a queued run has nothing to draw: its start redraws all
        live_curves()
else:
    _status_line(selected)
    _curves(selected.id)
    _film(selected, finished=selected.status == "done")
    if selected.status == "done" and selected.result:
        ui.result_table(selected, ghosts, floor)
