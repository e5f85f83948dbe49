"""Room: the instructor's view of a workshop (`?admin=<key>`), live. The challenge: publish
one on this experiment, its entries' standings, close it, reveal the best settings. Every
participant's runs of this experiment: a roster, a leaderboard by a score the instructor picks
with the noise floor marked, and one Pareto chart; a click on an entry opens its run read-only
on Unlearn. `?projector=1`: large type, no sidebar."""

import time

import pandas as pd
import streamlit as st

from dimalign import contest, plots, room, ui
from dimalign.errors import ConfigError
from dimalign.export import csv_text
from dimalign.methods import ORDER, REGISTRY
from dimalign.plots import NOISE_LABEL
from dimalign.replicates import AVG_GAP
from dimalign.store import StoreError

cfg, who = ui.page("Room", banner=False)  # the challenge is drawn below, with its controls
if not who.admin:
    st.info("The room view is the instructor's: the server's instructor key opens it, as "
            "`?admin=<DIMALIGN_ADMIN_KEY>` in the address.")
    st.stop()

ROOM_EVERY = 0.5  # s: one indexed query; the page is read and drawn again only on a change
COUNTDOWN_EVERY = 5.0  # s: the challenge's time left, redrawn on its own (no query)
PROJECTOR_CSS = """<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
[data-testid="stExpandSidebarButton"] {display: none !important;}
html {font-size: 22px;}
[data-testid="stMainBlockContainer"] {max-width: 100%; padding-top: 2rem;}
[data-testid="stTable"] td, [data-testid="stTable"] th {font-size: 1.25rem;}
</style>"""

projector = ui.sticky("projector") == "1"  # in the address: a reload keeps it


def _projector(on: bool) -> None:  # a callback
    if on:
        ui.remember("projector", "1")
    else:
        ui.forget("projector")


if projector:
    st.markdown(PROJECTOR_CSS, unsafe_allow_html=True)
st.button("Leave projector mode" if projector else "Projector mode", key="room_projector",
          on_click=_projector, args=(not projector,))

experiments = ui.room_experiments(cfg)
drawn = ui.room_version(experiments)  # read before the runs: a change in between draws again


@st.fragment(run_every=ROOM_EVERY)
def watch() -> None:
    if ui.room_version(experiments) != drawn:
        st.rerun()


watch()


def _challenge_action(action: str, challenge_id: int | None = None) -> None:  # a callback
    """Publish (the form's values), close, open again or reveal; what happened is said
    under the challenge's heading (this draw already shows its effect)."""
    state = st.session_state
    try:
        if action == "publish":
            budget = state["challenge_budget"]
            ui.publish_challenge(cfg, ui.sticky("preset"), state.get("overrides", []), who,
                                 title=state["challenge_title"],
                                 instructions=state["challenge_instructions"],
                                 methods=state["challenge_methods"],
                                 metric=state["challenge_metric"], budget=budget or None)
            said = ("success", f"Published *{state['challenge_title'].strip()}*: every "
                               "participant's pages show it.")
        elif action == "close":
            said = ("success", "Closed: no more entries. *Reveal the best settings* shows "
                               "everyone the winning run's method and knobs.") \
                if ui.close_challenge(challenge_id, who) else \
                ("info", "Not closed: it was closed already (this page was out of date).")
        elif action == "open":
            said = ("success", "Open again: entries are taken by the same rules as before "
                               "(its time budget, if any, counts from its publication).") \
                if ui.reopen_challenge(challenge_id, who) else \
                ("info", "Not opened: it, or another challenge, is open already (this page "
                         "was out of date).")
        else:
            run_id = ui.reveal_best(challenge_id, who)
            said = ("success", f"Revealed run {run_id}'s settings on every page.")
    except (ConfigError, StoreError, ValueError) as err:
        said = ("error", f"{ui.said(err)}.")
    state["_room_challenge_said"] = said


st.subheader("Challenge")
challenge = ui.current_challenge()
if said := st.session_state.pop("_room_challenge_said", None):
    {"success": st.success, "info": st.info}.get(said[0], st.error)(said[1])


@st.fragment(run_every=COUNTDOWN_EVERY)
def headline(challenge) -> None:
    """The challenge's line with its time left: redrawn every few seconds on its own (the
    page itself is drawn again only when the room's runs or the challenges change)."""
    left = contest.time_left(challenge, time.time())
    st.markdown(f"**{challenge.title}** — {'open' if challenge.open else 'closed'}"
                + (f", {left}" if left else "") + f". Ranked by {room.SCORES[challenge.metric]}"
                + contest.budget_text(challenge) + "; methods allowed: "
                f"{', '.join(challenge.methods)}; experiment: "
                f"{contest.experiment_text(challenge)}.")


if challenge is not None:
    headline(challenge)
    version = ui.store().challenge_version()  # read once: the entries and the revealed text
    entries = ui.challenge_entries(challenge, version)
    standings = contest.board_rows(entries.board, challenge.metric)
    with st.container(key="room_challenge"):
        if standings:
            st.table(pd.DataFrame(standings).set_index("rank"))
        else:
            st.info(contest.no_standings_text(challenge.metric, len(entries.ids)))
    st.caption(f"{contest.entries_text(entries.counts)}; each participant's best entry is "
               "ranked.")
    if (revealed := ui.revealed_settings(challenge, version)) is not None:
        st.markdown(revealed)
    if not projector:
        if challenge.open:
            st.button("Close the challenge", key="challenge_close", on_click=_challenge_action,
                      args=("close", challenge.id))
        else:
            spent = challenge.deadline is not None and challenge.deadline <= time.time()
            left_col, right_col = st.columns(2)
            left_col.button("Reveal the best settings", key="challenge_reveal",
                            on_click=_challenge_action, args=("reveal", challenge.id),
                            disabled=challenge.revealed_run is not None or not standings,
                            help="Every page's banner then shows the winning run's method "
                                 "and knobs")
            right_col.button("Open it again", key="challenge_open", on_click=_challenge_action,
                             args=("open", challenge.id), disabled=spent,
                             help="Its time budget has run out: publish it again for another "
                                  "round" if spent else
                                  "Entries are taken again, by the same rules")
PUBLISH = "Publish a challenge" + (" (closes the open one)" if challenge and challenge.open
                                   else "")
if not projector:
    with st.expander(PUBLISH, expanded=challenge is None), \
            st.form("challenge_form", border=False):
        st.text_input("Title", key="challenge_title", placeholder="Part 2: forget like retraining")
        st.text_area("Instructions (markdown)", key="challenge_instructions",
                     placeholder="Reach the lowest avg-gap with MUDA: try λ_DA first.")
        st.multiselect("Methods allowed", [m for m in ORDER if REGISTRY[m].trains],
                       default=["muda"], key="challenge_methods")
        st.radio("Ranked by", list(room.SCORES), format_func=room.SCORES.get, horizontal=True,
                 key="challenge_metric")
        st.number_input("Time budget in minutes (0: none)", min_value=0, value=0, step=5,
                        key="challenge_budget",
                        help="Entries must be runs queued after the challenge is published "
                             "and finished within this many minutes of it (closing and "
                             "opening it again does not move that)")
        st.caption("On this page's experiment, every replicate: "
                   f"`{ui.sticky('preset')}`"
                   + "".join(f" `{o}`" for o in st.session_state.get("overrides", []))
                   + " (change it in the sidebar and on the Experiment page).")
        st.form_submit_button("Publish", type="primary", on_click=_challenge_action,
                              args=("publish",), key="challenge_publish")
    past = [c for c in ui.challenges() if challenge is None or c.id != challenge.id]
    if past:
        st.caption("Earlier challenges: " + "; ".join(
            f"*{c.title}* ({'open' if c.open else 'closed'})" for c in past) + ".")


def _open(run_id: str | None) -> None:
    """An entry clicked: its run on Unlearn, read-only (the instructor's view)."""
    if run_id:
        ui.follow(run_id)
        st.switch_page("pages/unlearn.py")


runs = ui.replicate_runs(cfg, who)  # every participant's, every replicate's, newest first
# the challenge's entries, where it is on this experiment: marked on the board, or the board
entered = entries.ids if challenge and set(challenge.experiments) == set(
    experiments) else None
only_entries = entered is not None and st.toggle(
    f"Only the entries in *{challenge.title}*", key="room_entries_only",
    help="The leaderboard, the chart and the roster of the challenge's entries alone")
if only_entries:
    runs = [r for r in runs if r.id in entered]
if not runs:
    st.info("No entries yet." if only_entries else
            "No participant has run this experiment yet: the board fills in as they do.")
    st.stop()
key = st.radio("Rank by", list(room.SCORES), format_func=room.SCORES.get, horizontal=True,
               key="room_score")
summary = room.summary(runs, key, ui.replicate_results(cfg))  # baselines jobs' replicates too
board, floor = summary["board"], summary["floor"]
rows = room.board_rows(board, key)
if entered is not None:
    for row in rows:
        row["entered"] = "✔" if row["run"] in entered else ""


NUMBERS = {key, f"{key} sd", "forget gap", "retain gap", "rank", "best score"}


def _table(frame: pd.DataFrame, name: str, column: str, entries: list[dict]) -> None:
    """Large HTML type on the projector; elsewhere a table whose row click opens its run."""
    for number in set(frame) & NUMBERS:  # a column of None is drawn "None", NaN as empty
        frame[number] = pd.to_numeric(frame[number])
    if projector and "participant" in frame:  # st.table's cells are markdown: a name as
        frame["participant"] = frame["participant"].map(contest.literal)  # typed, a code span
    styled = frame.style.format(precision=3, na_rep="–").format(
        "{:.0f}", subset=[c for c in ("rank",) if c in frame], na_rep="–")  # None made it float
    if projector:
        st.table(styled)
        return
    event = st.dataframe(styled, hide_index=True, key=name, on_select="rerun",
                         selection_mode="single-row")
    _open(next((entries[i][column] for i in event.selection.rows), None))


st.subheader("Leaderboard")
with st.container(key="room_leaderboard"):
    if board:
        _table(pd.DataFrame(rows), "room_board", "run", board)
    else:
        st.info("No finished run has this score yet" + (
            ": the final score needs six replicates of one setting or more." if key != AVG_GAP
            else "."))
if key == AVG_GAP:
    width = (f": {floor[AVG_GAP]:.3f}" if floor.get(AVG_GAP) is not None else
             "; it needs two replicates of the baselines")
    st.caption("Each participant's best setting by mean avg-gap over its replicates. ≈ retrain: "
               f"{NOISE_LABEL}, its avg-gap within the noise floor (how far retrained models "
               f"of different replicates differ{width}).")
else:
    st.caption("Each participant's best setting by the unlearning challenge's final score. "
               "≈ retrain: within one sd of retraining's own score against itself, or above.")

st.subheader("The room on one Pareto chart")
fig = plots.room_figure(summary["points"], summary["box"], large=projector)
event = ui.chart(fig, "room_pareto", on_select="rerun", selection_mode="points",
                 theme=None if projector else "streamlit")  # the theme's type is too small
_open(next((p["customdata"][0] for p in (event.selection.points if event else [])
            if p.get("customdata")), None))
st.caption("Every finished run, each participant's best starred; the grey corner: "
           f"{NOISE_LABEL}. Click a point to open its run.")

st.subheader("Roster")
roster = summary["roster"]
_table(pd.DataFrame(roster), "room_roster", "latest", roster)
if note := ui.more_runs_note(runs):
    st.caption(note)
if not projector:
    st.caption("Click a row to open its run (the leaderboard: the best; the roster: the "
               "latest) on Unlearn, read-only.")
    if rows:
        st.download_button("Download the board (CSV)", csv_text(rows), "dimalign-room.csv",
                           "text/csv", key="room_csv", on_click="ignore")  # no redraw
