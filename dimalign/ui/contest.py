"""A workshop's challenges on the pages: the banner every page opens with (`frame.page` draws
it; it follows the store every BANNER_EVERY seconds), entering a run (the Unlearn page's *Submit
this run*), and the instructor's actions on the Room page: publish, close, open again, reveal
the best settings. The store checks every entry (`store.entry_refusal`); the standings are
`contest.standings`, computed once per change of the challenges or their entries (cached for
every session, with the challenge itself and its revealed settings)."""

from __future__ import annotations

import time
from typing import NamedTuple

import streamlit as st

from dimalign import contest
from dimalign.config import Config
from dimalign.room import SCORES
from dimalign.store import Challenge, OwnerRefused, Store, StoreError
from dimalign.train import experiment_key
from dimalign.ui.runs import experiment_results, room_experiments, run_knobs
from dimalign.ui.state import Identity, remember, store
from dimalign.uploads import hide_server_paths

# s: how often each page's banner looks at the store while a challenge exists. A look is one
# query (`Store.challenge_version`); the challenge, its standings and its revealed settings
# are read again only when that moves, once for every session (the caches below).
BANNER_EVERY = 2.0
IDLE_EVERY = 5.0  # s: the same look while no challenge has been published at all


class Entries(NamedTuple):
    """A challenge's entries as the pages read them (`challenge_entries`)."""

    board: list[dict]  # `contest.standings`: each entrant's best entry, best first
    counts: dict[str, int]  # how many runs each participant has entered
    ids: frozenset[str]  # every run entered


def current_challenge() -> Challenge | None:
    """The open challenge, else the newest closed one, else None (read now)."""
    return store().current_challenge()


def challenges() -> list[Challenge]:
    """Every challenge, newest first."""
    return store().challenges()


def challenge_entries(challenge: Challenge, version: tuple | None = None) -> Entries:
    """The challenge's entries: its standings (ranked as the Room's leaderboard ranks, with
    "≈ retrain" against the same reference: the baselines of every replicate of its
    experiment), the runs each participant has entered, and their ids. `version`: the
    store's `challenge_version`, when the caller has read it already."""
    db = store()
    return _entries(db, str(db.path), version or db.challenge_version(), challenge.id,
                    challenge.metric, tuple(challenge.experiments))


@st.cache_data(show_spinner=False, max_entries=64)
def _entries(_store: Store, path: str, version: tuple, challenge_id: int, metric: str,
             experiments: tuple[str, ...]) -> Entries:
    # the key: one store's entries as they stand (`version` moves with each; the runs entered
    # are finished, so their results no longer change). The reference (the experiment's
    # baselines) is read with them: a baselines job that finishes later counts from the next
    # entry or change of the challenges on.
    runs = _store.submissions(challenge_id)
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.owner] = counts.get(run.owner, 0) + 1
    board = contest.standings(runs, metric, experiment_results(experiments, _store))
    return Entries(board, counts, frozenset(run.id for run in runs))


@st.cache_data(show_spinner=False, max_entries=16)
def _current(_store: Store, path: str, version: tuple) -> Challenge | None:
    # `version`: the challenges' count and last change (an entry does not change them)
    return _store.current_challenge()


def enter_challenge(run_id: str, who: Identity) -> Challenge:
    """Enter `who`'s finished run in the open challenge (the store checks the key and the
    run: a refusal is a StoreError of one line); returns the challenge."""
    challenge = current_challenge()
    if challenge is None or not challenge.open:
        raise StoreError("there is no open challenge to enter")
    store().submit_to_challenge(challenge.id, run_id, who.name, who.key)
    return challenge


def _instructor(who: Identity) -> None:
    if not who.admin:
        raise OwnerRefused("only the instructor's view publishes, closes or reveals challenges")


def publish_challenge(cfg: Config, preset: str, overrides: list[str], who: Identity, *,
                      title: str, instructions: str, methods: list[str], metric: str,
                      budget: float | None) -> int:
    """Publish a challenge on the experiment `cfg` (every replicate of it) as the instructor;
    the open one, if any, is closed. `budget`: minutes, or None (0 is none)."""
    _instructor(who)
    return store().publish_challenge(
        title=title, instructions=instructions, preset=preset, overrides=list(overrides),
        experiments=list(room_experiments(cfg)), methods=list(methods), metric=metric,
        budget=budget or None)


def close_challenge(challenge_id: int, who: Identity) -> bool:
    """Close the challenge as the instructor; whether it was open."""
    _instructor(who)
    return store().close_challenge(challenge_id)


def reopen_challenge(challenge_id: int, who: Identity) -> bool:
    """Open the closed challenge again as the instructor (`Store.open_challenge`: its budget
    keeps its start); whether it did (not when it, or another one, is open)."""
    _instructor(who)
    return store().open_challenge(challenge_id)


def reveal_best(challenge_id: int, who: Identity) -> str:
    """Show everyone the settings of the challenge's best entry (it must be closed); returns
    that run's id."""
    _instructor(who)
    board = challenge_entries(store().challenge(challenge_id)).board
    if not board:
        raise StoreError("no entry has the challenge's score yet: nothing to reveal")
    store().reveal_challenge(challenge_id, board[0]["run"])
    return board[0]["run"]


def revealed_settings(challenge: Challenge, version: tuple | None = None) -> str | None:
    """The revealed entry's settings as one line of markdown: who, which run, its score, the
    method and every knob (those moved from their defaults first); None before a reveal.
    `version`: as for `challenge_entries`."""
    if challenge.revealed_run is None:
        return None
    db = store()
    board = challenge_entries(challenge, version).board
    score = next((row["score"] for row in board if row["run"] == challenge.revealed_run), None)
    return _revealed(db, str(db.path), challenge.revealed_run, challenge.metric, score)


@st.cache_data(show_spinner=False, max_entries=16)
def _revealed(_store: Store, path: str, run_id: str, metric: str, score: float | None) -> str:
    # the key: a finished run's settings, which no longer change, and its score as ranked
    run = _store.get(run_id)
    knobs, defaults = run_knobs(run)
    ranked = "" if score is None else \
        f", {contest.score_name(metric)} {contest.score_text(score)}"
    return (f"**Best settings**, {contest.literal(run.owner)}'s run {run.id}{ranked}: "
            + contest.settings_text(run.method, knobs, defaults))


def _use_experiment(challenge: Challenge) -> None:  # a button's callback
    """Switch this session to the challenge's experiment: its preset and settings (the
    banner then draws the whole page again: a button in a fragment redraws only that)."""
    st.session_state["_challenge_switched"] = True
    remember("preset", challenge.preset)
    st.session_state.pop("preset", None)  # the sidebar's picker: drawn again from the address
    st.session_state["overrides"] = list(challenge.overrides)
    st.session_state["overrides_for"] = challenge.preset
    st.session_state["own_data"] = []
    for key in [k for k in st.session_state if str(k).startswith("exp_")]:
        del st.session_state[key]  # the Experiment page's widgets: drawn again from these


def banner(cfg: Config | None, who: Identity) -> None:
    """The challenge banner every page shows under its title: the open challenge (else the
    last one) with its experiment, methods, score, time left and instructions, the session's
    standing (for a participant), and, once revealed, the best settings. It looks at the
    store every BANNER_EVERY seconds (IDLE_EVERY while there is no challenge): a new entry
    redraws the banner, a challenge published, closed, opened or revealed the whole page."""
    drawn = store().challenge_version()
    challenge = _current(store(), str(store().path), drawn[:2])
    elsewhere = (challenge is not None and challenge.open and cfg is not None
                 and not who.admin and experiment_key(cfg) not in challenge.experiments)
    unread = [drawn]  # this run's look serves the fragment's first draw; its reruns look again

    @st.fragment(run_every=BANNER_EVERY if drawn[0] else IDLE_EVERY)
    def live() -> None:
        version = unread.pop() if unread else store().challenge_version()
        switched = st.session_state.pop("_challenge_switched", False)  # popped either way
        if switched or version[:2] != drawn[:2]:
            st.rerun()
        if challenge is not None:
            _draw(challenge, version, elsewhere, who)

    live()


def _draw(challenge: Challenge, version: tuple, elsewhere: bool, who: Identity) -> None:
    entries = challenge_entries(challenge, version)
    state = "open" if challenge.open else "closed"
    left = contest.time_left(challenge, time.time())
    with st.container(border=True, key="challenge_banner"):
        st.markdown(f":material/emoji_events: **Challenge: {challenge.title}** — {state}"
                    + (f", {left}" if left else ""))
        st.caption(f"Experiment: {hide_server_paths(contest.experiment_text(challenge))}. "
                   f"Methods allowed: {', '.join(challenge.methods)}. Ranked by "
                   f"{SCORES[challenge.metric]}" + contest.budget_text(challenge) + ".")
        if challenge.instructions.strip():
            with st.expander("Instructions"):
                st.markdown(challenge.instructions)
        if who.admin:
            st.markdown(f"{contest.entries_text(entries.counts)}.")
        else:
            st.markdown(contest.standing_text(entries.board, who.name, challenge.metric,
                                              entries.counts.get(who.name, 0),
                                              challenge.open))
            if elsewhere:
                st.button("Use the challenge's experiment", key="challenge_experiment",
                          on_click=_use_experiment, args=(challenge,),
                          help="This page's experiment is not the challenge's: switch to its "
                               "preset and settings (your runs stay)")
        if (settings := revealed_settings(challenge, version)) is not None:
            st.markdown(settings)
