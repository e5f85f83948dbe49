"""A workshop's challenges as plain data: the standings of a challenge's entries by its score,
a participant's place among them, the time its budget leaves, and the winning settings as text.
(Not the NeurIPS 2023 unlearning challenge's scores: those are `challenge`.)

A challenge itself lives in the store (`store.Challenge`: its experiment, the methods it
allows, its score, an optional budget in minutes); the store checks each entry
(`store.entry_refusal`). Entries are ranked as the room's leaderboard ranks runs
(`room.leaderboard`): each participant's best setting, replicates of one setting together.
Pure Python: no streamlit, no SQL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from dimalign.room import FINAL, SCORES, leaderboard

PLACES = {1: "1st", 2: "2nd", 3: "3rd"}


def check_metric(metric: str) -> str:
    """`metric` if a challenge can rank by it (`room.SCORES`), else a readable ValueError."""
    if metric not in SCORES:
        raise ValueError(f"a challenge ranks by {' or '.join(SCORES)}, not {metric!r}")
    return metric


def standings(entries: Sequence, metric: str) -> list[dict]:
    """The board of a challenge: `room.leaderboard` over its entered runs (each
    participant's best entry), by its score; entries without that score are left out."""
    return leaderboard(entries, check_metric(metric))


def place(rank: int) -> str:
    """1 -> "1st", 12 -> "12th", 22 -> "22nd"."""
    if rank % 100 in (11, 12, 13):
        return f"{rank}th"
    return f"{rank}{PLACES.get(rank % 10, 'th')[-2:]}"


def standing(board: Sequence[dict], owner: str) -> dict | None:
    """`owner`'s row of a challenge's board with `of` (how many are ranked), or None when
    `owner` has no ranked entry."""
    row = next((r for r in board if r["participant"] == owner), None)
    return None if row is None else {**row, "of": len(board)}


def standing_text(board: Sequence[dict], owner: str, metric: str, entered: int) -> str:
    """What a participant's banner says of their place: rank among the ranked entrants and
    their best score, or how to enter (`entered`: how many runs `owner` has entered)."""
    mine = standing(board, owner)
    if mine is not None:
        return (f"You are **{place(mine['rank'])} of {mine['of']}** with "
                f"{SCORES[metric].split(' (')[0]} {score_text(mine['score'])} (run {mine['run']}).")
    if entered:
        return (f"Your {entered} {'entry has' if entered == 1 else 'entries have'} no "
                f"{SCORES[metric].split(' (')[0]} yet" + (
                    ": the final score needs six replicates of one setting." if metric == FINAL
                    else "."))
    return ("You have no entry yet: finish a run of this experiment and press *Submit this "
            "run* on the Unlearn page.")


def entries_text(counts: Mapping[str, int]) -> str:
    """"3 entries from 2 participants" for {participant: runs entered}."""
    entries, people = sum(counts.values()), len(counts)
    return (f"{entries} {'entry' if entries == 1 else 'entries'} from {people} "
            f"{'participant' if people == 1 else 'participants'}")


def score_text(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.4f}"


def time_left(challenge, now: float) -> str | None:
    """"12 min left", "time is up", or None for a challenge without a budget or closed."""
    if challenge.deadline is None or not challenge.open:
        return None
    seconds = challenge.deadline - now
    if seconds <= 0:
        return "time is up"
    return f"{math.ceil(seconds / 60):.0f} min left"


def experiment_text(challenge) -> str:
    """The challenge's experiment as a person sets it: the preset and its settings."""
    settings = ", ".join(f"`{o}`" for o in challenge.overrides)
    return f"`{challenge.preset}`" + (f" with {settings}" if settings else "")


def settings_text(method: str, knobs: Mapping, defaults: Mapping) -> str:
    """A run's method and knobs as one line of markdown, the knobs moved from their
    defaults first and bold, each with its default."""
    moved = [k for k in knobs if k in defaults and knobs[k] != defaults[k]]
    rest = [k for k in knobs if k not in moved]
    parts = [f"**{k} = {_value(knobs[k])}** (default {_value(defaults[k])})" for k in moved]
    parts += [f"{k} = {_value(knobs[k])}" for k in rest]
    return f"**{method}**" + (": " + " · ".join(parts) if parts else "")


def _value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" \
        if isinstance(value, float) else str(value)


def board_rows(board: Sequence[dict], metric: str) -> list[dict]:
    """A challenge's board as a table shows it: rank, participant, the best entry, its
    method and score."""
    name = SCORES[metric].split(" (")[0]
    return [{"rank": r["rank"], "participant": r["participant"], "run": r["run"],
             "method": r["method"], name: score_text(r["score"]),
             "≈ retrain": "≈ retrain" if r["retraining"] else ""} for r in board]
