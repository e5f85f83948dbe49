"""The instructor's room view as plain data: every participant's runs of one experiment as a
roster (latest and best run), a leaderboard by a chosen score with the noise floor marked, and
the room's points for one Pareto chart (forget gap against retain gap).

A participant's settings are scored as Compare scores them (`replicates.setting_rows`: the
replicates of one setting together, each paired with its own replicate's retrained model), but
owner by owner: two participants who try the same setting are two entries. Runs are anything
with a store run's fields (`id`, `owner`, `method`, `status`, `created`, `finished`, `config`,
`result`). Pure Python: no streamlit, no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dimalign.replicates import (
    AVG_GAP,
    inside,
    noise_floor,
    replicate_of,
    result_key,
    score_of,
    setting_rows,
    stored_scores,
)

FINAL = "final_score"
SCORES = {AVG_GAP: "avg-gap (lower is better)", FINAL: "final score (higher is better)"}
KEYS = ("acc_forget", "acc_retain", AVG_GAP)  # what the board and the chart read of a result


def complete(run) -> bool:
    """A finished run whose result holds what the board reads (unlearned and retrained
    models, and the time to compare with retraining)."""
    result = run.result or {}
    models = result.get("models") or {}
    return (run.status == "done" and "unlearned" in models and "retrained" in models
            and "unlearn" in (result.get("seconds") or {}))


def gap(result: dict, key: str) -> float | None:
    """|unlearned − retrained| of one metric in a run's result (its own replicate's)."""
    models = result["models"]
    u, r = models["unlearned"].get(key), models["retrained"].get(key)
    return None if u is None or r is None else abs(u - r)


def score(row: dict, key: str) -> tuple[float | None, float | None]:
    """(value, sd) of `key` for a `setting_rows` row: avg-gap's mean over replicates, or the
    challenge's final score (which needs six replicates of the setting or more)."""
    if key == AVG_GAP:
        return row["mean"].get(AVG_GAP), row["sd"].get(AVG_GAP) if row["replicates"] > 1 else None
    return score_of(row, key)


def reference(runs: Sequence, results: Sequence[dict] | None = None
              ) -> tuple[dict, tuple[float | None, float | None]]:
    """What the room says of retraining itself: the noise floor of its replicates' retrained
    models (per key; every value None under two replicates) and retraining's own final score
    against itself, (value, sd). `results`: one finished result per replicate (a baselines
    job's counts: the instructor trains replicates without running a method); by default the
    newest of the room's runs on each replicate."""
    by_replicate: dict[int, dict] = {}
    for run in runs:  # newest first: the newest result of each replicate (one baselines each)
        if complete(run):
            by_replicate.setdefault(replicate_of(run.config), run.result)
    chosen = list(results) if results else [by_replicate[r] for r in sorted(by_replicate)]
    if not chosen:
        return {}, (None, None)
    floor = noise_floor([res["models"]["retrained"] for res in chosen], KEYS)
    named = tuple(result_key(res) for res in chosen)  # as Compare names them: one memo
    scored = stored_scores(named, chosen, "retrained")
    return floor, score_of({"forgetting": scored}, FINAL)


def indistinguishable(row: dict, key: str, floor: dict,
                      final_ref: tuple[float | None, float | None]) -> bool | None:
    """Whether a setting is indistinguishable from retraining by `key`: its mean avg-gap
    within the noise floor, or its final score within one sd of retraining's own (or above
    it). None where the room cannot tell (two replicates of the baselines at least, or six
    for the final score)."""
    if key == AVG_GAP:
        return inside(row["abs_gap"].get(AVG_GAP), floor.get(AVG_GAP))
    value, (ref, ref_sd) = score(row, key)[0], final_ref
    if value is None or ref is None:
        return None
    return value >= ref - (ref_sd or 0.0)


def _by_owner(runs: Iterable) -> dict[str, list]:
    owners: dict[str, list] = {}
    for run in runs:
        owners.setdefault(run.owner, []).append(run)
    return owners


def best_settings(runs: Sequence, key: str) -> dict[str, dict]:
    """Each participant's best setting by `key` (a `setting_rows` row), among those that have
    the score; the earlier finished wins a tie. Participants with none are left out."""
    best = {}
    for owner, own in _by_owner(runs).items():
        done = sorted((r for r in own if complete(r)), key=lambda r: r.created, reverse=True)
        if not done:
            continue
        finished = {r.id: r.finished or r.created for r in done}
        rows = setting_rows([(r.id, r.method, r.config, _for(r.result, key)) for r in done],
                            KEYS)
        for row in rows:
            row["finished"] = max(finished[i] for i in row["runs"].values())
        scored = [row for row in rows if score(row, key)[0] is not None]
        if scored:
            best[owner] = min(scored, key=lambda row: (_rank_key(score(row, key)[0], key),
                                                       row["finished"]))
    return best


def _for(result: dict, key: str) -> dict:
    """A result as scoring by `key` needs it: without its forget confidences unless the final
    score is asked for (setting_rows then skips the challenge's scores, a bootstrap a setting,
    which a room of many settings would pay at every redraw)."""
    if key == FINAL:
        return result
    return {k: v for k, v in result.items() if k != "forget_confidence"}


def _rank_key(value: float, key: str) -> float:
    return -value if key == FINAL else value


def leaderboard(runs: Sequence, key: str = AVG_GAP, ref: tuple | None = None) -> list[dict]:
    """One row per participant with a score, best first: rank, participant, the best
    setting's run (its lowest replicate: the one a click opens), method, replicates, the
    score and its sd, whether it is indistinguishable from retraining (`indistinguishable`),
    and that run's forget and retain gaps. Equal scores share a rank. `ref`: `reference(runs)`,
    when the caller has it already."""
    if key not in SCORES:
        raise ValueError(f"unknown score {key!r}; known: {', '.join(SCORES)}")
    floor, final_ref = ref if ref is not None else reference(runs)
    by_run = {r.id: r for r in runs}
    best = best_settings(runs, key)
    order = sorted(best, key=lambda o: (_rank_key(score(best[o], key)[0], key),
                                        best[o]["finished"], o))
    board: list[dict] = []
    for place, owner in enumerate(order, 1):
        row = best[owner]
        value, sd = score(row, key)
        result = by_run[row["run"]].result
        tied = board and board[-1]["score"] == value
        board.append({"rank": board[-1]["rank"] if tied else place, "participant": owner,
                      "run": row["run"], "method": row["method"],
                      "replicates": row["replicates"], "score": value, "sd": sd,
                      "retraining": indistinguishable(row, key, floor, final_ref),
                      "forget_gap": gap(result, "acc_forget"),
                      "retain_gap": gap(result, "acc_retain")})
    return board


def roster(runs: Sequence, board: Sequence[dict]) -> list[dict]:
    """One row per participant who has a run, by name: how many runs (and how many are
    queued or running), the latest run, its method and status, and the best run by the
    board's score (None until one has finished)."""
    best = {row["participant"]: row for row in board}
    rows = []
    for owner, own in sorted(_by_owner(runs).items()):
        latest = max(own, key=lambda r: r.created)
        mine = best.get(owner, {})
        rows.append({"participant": owner, "runs": len(own),
                     "active": sum(r.status in ("queued", "running") for r in own),
                     "latest": latest.id, "method": latest.method, "status": latest.status,
                     "best": mine.get("run"), "rank": mine.get("rank"),
                     "best score": mine.get("score")})
    return rows


def pareto_points(runs: Sequence, board: Sequence[dict]) -> list[dict]:
    """Every finished run of the room as a point of the Pareto chart: its forget and retain
    gaps to its own replicate's retrained model, its participant, and `best` for the run
    each participant's board row opens."""
    best = {row["run"] for row in board}
    points = []
    for run in runs:
        if not complete(run):
            continue
        forget, retain = gap(run.result, "acc_forget"), gap(run.result, "acc_retain")
        if forget is not None and retain is not None:
            points.append({"run": run.id, "participant": run.owner, "method": run.method,
                           "forget_gap": forget, "retain_gap": retain,
                           "best": run.id in best})
    return points


def floor_box(floor: dict) -> tuple[float, float] | None:
    """The noise floor's (forget gap, retain gap) from `reference`'s floor: how far retrained
    models of different replicates lie apart on each; None under two replicates."""
    forget, retain = floor.get("acc_forget"), floor.get("acc_retain")
    return None if forget is None or retain is None else (forget, retain)


def summary(runs: Sequence, key: str = AVG_GAP, results: Sequence[dict] | None = None) -> dict:
    """Everything the room view draws, from the room's runs (newest first) and `results`
    (`reference`'s): `board` (`leaderboard`), `roster`, `points` (`pareto_points`), `floor`
    (the noise floor per key) and `box` (`floor_box`)."""
    ref = reference(runs, results)
    board = leaderboard(runs, key, ref)
    return {"board": board, "roster": roster(runs, board), "points": pareto_points(runs, board),
            "floor": ref[0], "box": floor_box(ref[0])}


def board_rows(board: Sequence[dict], key: str) -> list[dict]:
    """The leaderboard as the page's table and the CSV hold it: the score under its own name
    with its sd, and "≈ retrain" where it is indistinguishable from retraining."""
    return [{"rank": r["rank"], "participant": r["participant"], "run": r["run"],
             "method": r["method"], key: r["score"], f"{key} sd": r["sd"],
             "retraining": "≈ retrain" if r["retraining"] else "",
             "forget gap": r["forget_gap"], "retain gap": r["retain_gap"],
             "replicates": r["replicates"]} for r in board]
