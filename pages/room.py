"""Room: the instructor's view of a workshop (`?admin=<key>`), live. Every participant's runs of
this experiment: a roster, a leaderboard by a score the instructor picks with the noise floor
marked, and one Pareto chart; a click on an entry opens its run read-only on Unlearn.
`?projector=1`: large type, no sidebar."""

import pandas as pd
import streamlit as st

from dimalign import plots, room, ui
from dimalign.export import csv_text
from dimalign.plots import NOISE_LABEL
from dimalign.replicates import AVG_GAP

cfg, who = ui.page("Room")
if not who.admin:
    st.info("The room view is the instructor's: the server's instructor key opens it, as "
            "`?admin=<DIMALIGN_ADMIN_KEY>` in the address.")
    st.stop()

ROOM_EVERY = 0.5  # s: one indexed query; the page is read and drawn again only on a change
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


def _open(run_id: str | None) -> None:
    """An entry clicked: its run on Unlearn, read-only (the instructor's view)."""
    if run_id:
        ui.follow(run_id)
        st.switch_page("pages/unlearn.py")


runs = ui.replicate_runs(cfg, who)  # every participant's, every replicate's, newest first
if not runs:
    st.info("No participant has run this experiment yet: the board fills in as they do.")
    st.stop()
key = st.radio("Rank by", list(room.SCORES), format_func=room.SCORES.get, horizontal=True,
               key="room_score")
summary = room.summary(runs, key, ui.replicate_results(cfg))  # baselines jobs' replicates too
board, floor = summary["board"], summary["floor"]
rows = room.board_rows(board, key)


NUMBERS = {key, f"{key} sd", "forget gap", "retain gap", "rank", "best score"}


def _table(frame: pd.DataFrame, name: str, column: str, entries: list[dict]) -> None:
    """Large HTML type on the projector; elsewhere a table whose row click opens its run."""
    for number in set(frame) & NUMBERS:  # a column of None is drawn "None", NaN as empty
        frame[number] = pd.to_numeric(frame[number])
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
