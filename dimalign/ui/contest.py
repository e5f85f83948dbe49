"""A workshop's challenges on the pages: the banner every page opens with (`frame.page` draws
it; it follows the store every BANNER_EVERY seconds), entering a run (the Unlearn page's *Submit
this run*), and the instructor's actions on the Room page: publish, close, open again, reveal
the best settings. The store checks every entry (`store.entry_refusal`); the standings are
`contest.standings`, computed once per change of the entries (cached for every session)."""

from __future__ import annotations

import time

import streamlit as st

from dimalign import contest
from dimalign.config import Config
from dimalign.room import SCORES
from dimalign.store import Challenge, OwnerRefused, Store, StoreError
from dimalign.train import experiment_key
from dimalign.ui.runs import room_experiments, run_knobs
from dimalign.ui.state import Identity, remember, store
from dimalign.uploads import hide_server_paths

BANNER_EVERY = 2.0  # s: the banner's look at the store (one query; redrawn from the cache)


def current_challenge() -> Challenge | None:
    """The open challenge, else the newest closed one, else None."""
    return store().current_challenge()


def challenges() -> list[Challenge]:
    """Every challenge, newest first."""
    return store().challenges()


def challenge_board(challenge: Challenge) -> list[dict]:
    """The challenge's standings (`contest.standings`: each entrant's best entry)."""
    return _entries(store(), str(store().path), store().challenge_version(), challenge.id,
                    challenge.metric)[0]


def entry_counts(challenge: Challenge) -> dict[str, int]:
    """How many runs each participant has entered in the challenge."""
    return _entries(store(), str(store().path), store().challenge_version(), challenge.id,
                    challenge.metric)[1]


def entry_ids(challenge: Challenge) -> set[str]:
    """Every run entered in the challenge."""
    return _entries(store(), str(store().path), store().challenge_version(), challenge.id,
                    challenge.metric)[2]


@st.cache_data(show_spinner=False, max_entries=64)
def _entries(_store: Store, path: str, version: tuple, challenge_id: int,
             metric: str) -> tuple[list[dict], dict[str, int], set[str]]:
    # `path` and `version` are the key: the entries of one store as they stand (their runs
    # are finished, so their results no longer change)
    runs = _store.submissions(challenge_id)
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.owner] = counts.get(run.owner, 0) + 1
    return contest.standings(runs, metric), counts, {run.id for run in runs}


def entered(challenge: Challenge, who: Identity) -> set[str]:
    """The runs `who` has entered in the challenge."""
    if who.admin:
        return set()
    return {run.id for run in store().submissions(challenge.id, owner=who.name)}


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
    contest.check_metric(metric)
    return store().publish_challenge(
        title=title, instructions=instructions, preset=preset, overrides=list(overrides),
        experiments=list(room_experiments(cfg)), methods=list(methods), metric=metric,
        budget=budget or None)


def close_challenge(challenge_id: int, who: Identity) -> None:
    _instructor(who)
    store().close_challenge(challenge_id)


def reopen_challenge(challenge_id: int, who: Identity) -> None:
    _instructor(who)
    store().open_challenge(challenge_id)


def reveal_best(challenge: Challenge, who: Identity) -> str:
    """Show everyone the settings of the challenge's best entry (it must be closed); returns
    that run's id."""
    _instructor(who)
    board = challenge_board(challenge)
    if not board:
        raise StoreError("no entry has the challenge's score yet: nothing to reveal")
    store().reveal_challenge(challenge.id, board[0]["run"])
    return board[0]["run"]


def revealed_settings(challenge: Challenge) -> str | None:
    """The revealed entry's settings as one line of markdown: who, which run, its score, the
    method and every knob (those moved from their defaults first); None before a reveal."""
    if challenge.revealed_run is None:
        return None
    run = store().get(challenge.revealed_run)
    knobs, defaults = run_knobs(run)
    row = next((r for r in challenge_board(challenge) if r["run"] == run.id), None)
    score = "" if row is None else \
        f", {SCORES[challenge.metric].split(' (')[0]} {contest.score_text(row['score'])}"
    return (f"**Best settings**, {run.owner}'s run {run.id}{score}: "
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
    store every BANNER_EVERY seconds: a new entry redraws the banner, a challenge published,
    closed, opened or revealed the whole page (Unlearn's *Submit this run* follows it)."""
    drawn = store().challenge_version()

    @st.fragment(run_every=BANNER_EVERY)
    def live() -> None:
        version = store().challenge_version()
        if version[:2] != drawn[:2] or st.session_state.pop("_challenge_switched", False):
            st.rerun()
        challenge = current_challenge()
        if challenge is not None:
            _draw(challenge, cfg, who)

    live()


def _draw(challenge: Challenge, cfg: Config | None, who: Identity) -> None:
    board, counts = challenge_board(challenge), entry_counts(challenge)
    state = "open" if challenge.open else "closed"
    left = contest.time_left(challenge, time.time())
    with st.container(border=True, key="challenge_banner"):
        st.markdown(f":material/emoji_events: **Challenge: {challenge.title}** — {state}"
                    + (f", {left}" if left else ""))
        st.caption(f"Experiment: {hide_server_paths(contest.experiment_text(challenge))}. "
                   f"Methods allowed: {', '.join(challenge.methods)}. Ranked by "
                   f"{SCORES[challenge.metric]}"
                   + (f"; entries made within {challenge.budget:g} minutes of its opening"
                      if challenge.budget else "") + ".")
        if challenge.instructions.strip():
            with st.expander("Instructions"):
                st.markdown(challenge.instructions)
        if who.admin:
            st.markdown(f"{contest.entries_text(counts)}.")
        else:
            st.markdown(contest.standing_text(board, who.name, challenge.metric,
                                              counts.get(who.name, 0)))
            if challenge.open and cfg is not None and \
                    experiment_key(cfg) not in challenge.experiments:
                st.button("Use the challenge's experiment", key="challenge_experiment",
                          on_click=_use_experiment, args=(challenge,),
                          help="This page's experiment is not the challenge's: switch to its "
                               "preset and settings (your runs stay)")
        if (settings := revealed_settings(challenge)) is not None:
            st.markdown(settings)
