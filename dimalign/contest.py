"""A workshop's challenges as plain data: the standings of a challenge's entries by its score,
a participant's place among them, the time its budget leaves, and the winning settings as text.
(Not the NeurIPS 2023 unlearning challenge's scores: those are `challenge`.)

A challenge itself lives in the store (`store.Challenge`: its experiment, the methods it
allows, its score, an optional budget in minutes); the store checks each entry
(`store.entry_refusal`). Entries are ranked as the room's leaderboard ranks runs
(`room.leaderboard`): each participant's best setting, replicates of one setting together, and
"≈ retrain" against the same reference (the baselines of every replicate of the experiment).
Every participant-provided string these texts put into markdown is a code span (`literal`): a
name such as www.example.com stays a name, never a link. Pure Python: no streamlit, no SQL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from dimalign.room import FINAL, SCORES, leaderboard, reference

PLACES = {1: "1st", 2: "2nd", 3: "3rd"}


def check_metric(metric: str) -> str:
    """`metric` if a challenge can rank by it (`room.SCORES`), else a readable ValueError."""
    if metric not in SCORES:
        raise ValueError(f"a challenge ranks by {' or '.join(SCORES)}, not {metric!r}")
    return metric


def score_name(metric: str) -> str:
    """"avg-gap" or "final score": the score's name without its direction."""
    return SCORES[metric].split(" (")[0]


def literal(text) -> str:
    """`text` as a markdown code span: shown as typed, never a link, emphasis or directive
    (for what a participant typed: a name, a setting)."""
    text = str(text)
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def standings(entries: Sequence, metric: str, results: Sequence[dict] | None = None
              ) -> list[dict]:
    """The board of a challenge: `room.leaderboard` over its entered runs (each
    participant's best entry), by its score; entries without that score are left out.
    `results`: one finished result per replicate of the challenge's experiment (its baselines,
    `ui.replicate_results`), the reference of "≈ retrain" that the room's leaderboard uses; by
    default the entries' own."""
    return leaderboard(entries, check_metric(metric), reference(entries, results))


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


def standing_text(board: Sequence[dict], owner: str, metric: str, entered: int,
                  is_open: bool = True) -> str:
    """What a participant's banner says of their place: rank among the ranked entrants and
    their best score, or how to enter (`entered`: how many runs `owner` has entered); of a
    closed challenge, where they finished, and no invitation to enter."""
    mine = standing(board, owner)
    if mine is not None:
        return (f"You {'are' if is_open else 'finished'} **{place(mine['rank'])} of "
                f"{mine['of']}** with {score_name(metric)} {score_text(mine['score'])} "
                f"(run {mine['run']}).")
    if not is_open:
        return (f"Your {entered} {'entry' if entered == 1 else 'entries'} had no "
                f"{score_name(metric)}." if entered else "You had no entry in this challenge.")
    if entered:
        return (f"Your {entered} {'entry has' if entered == 1 else 'entries have'} no "
                f"{score_name(metric)} yet" + (f": {FINAL_NEEDS}." if metric == FINAL else "."))
    return ("You have no entry yet: finish a run of this experiment and press *Submit this "
            "run* on the Unlearn page" + (f" ({FINAL_NEEDS})." if metric == FINAL else "."))


# what a participant must enter to be ranked by the final score (`room.score`: six replicates)
FINAL_NEEDS = ("the final score ranks a setting entered on six replicates or more: run one "
               "setting on six replicates (Tune, *Replicates* 6) and enter each of its runs")


def no_standings_text(metric: str, entries: int) -> str:
    """What the instructor's board says while no entry is ranked (`entries`: how many runs
    are entered)."""
    if not entries:
        return ("No entries yet: a participant enters a finished run with *Submit this run* on "
                "the Unlearn page.")
    return f"No entry has {'a final score' if metric == FINAL else 'an avg-gap'} yet" + (
        f": {FINAL_NEEDS}." if metric == FINAL else ".")


def entries_text(counts: Mapping[str, int]) -> str:
    """"3 entries from 2 participants" for {participant: runs entered}."""
    entries, people = sum(counts.values()), len(counts)
    return (f"{entries} {'entry' if entries == 1 else 'entries'} from {people} "
            f"{'participant' if people == 1 else 'participants'}")


def score_text(value: float | None) -> str:
    """A score with four decimals; "–" for none (None, or NaN of any float type)."""
    if value is None or math.isnan(float(value)):
        return "–"
    return f"{float(value):.4f}"


def time_left(challenge, now: float) -> str | None:
    """"12 min left", "time is up", or None for a challenge without a budget or closed."""
    if challenge.deadline is None or not challenge.open:
        return None
    seconds = challenge.deadline - now
    if seconds <= 0:
        return "time is up"
    if math.ceil(seconds) < 60:  # the last minute, by the second (the projector's countdown)
        return f"{math.ceil(seconds):.0f} s left"
    return f"{math.ceil(seconds / 60):.0f} min left"


def budget_text(challenge) -> str:
    """"; entries: runs queued after it was published and finished within 10 minutes of it"
    (the rule `store.entry_refusal` checks), or "" without a budget."""
    if challenge.budget is None:
        return ""
    return (f"; entries: runs queued after it was published and finished within "
            f"{challenge.budget:g} minute{'' if challenge.budget == 1 else 's'} of it")


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
    """A knob's value as the settings line shows it: true/false, 2.5 (not 2.50000), a text
    as a code span."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if isinstance(value, int) else literal(value)  # a text: as typed


def board_rows(board: Sequence[dict], metric: str) -> list[dict]:
    """A challenge's board as a table shows it (st.table: its cells are markdown): rank,
    participant (a code span, `literal`), the best entry, its method and score."""
    return [{"rank": r["rank"], "participant": literal(r["participant"]), "run": r["run"],
             "method": r["method"], score_name(metric): score_text(r["score"]),
             "≈ retrain": "≈ retrain" if r["retraining"] else ""} for r in board]
