"""The instructor's room view as data (dimalign/room.py), its Pareto chart (plots.room_figure)
and the store's room version: on hand-made runs, no training."""

from typing import NamedTuple

import pytest

from dimalign import room
from dimalign.plots import NOISE_LABEL, room_figure


class Run(NamedTuple):  # a store run's fields the room reads
    id: str
    owner: str
    method: str
    status: str
    created: float
    finished: float | None
    config: dict
    result: dict | None


def result(avg: float, forget: float = 0.1, retain: float = 0.02, shift: float = 0.0) -> dict:
    """A finished run's result: its gaps to a retrained model whose acc_forget is `shift`."""
    retrained = {"acc_forget": shift, "acc_retain": 1.0, "acc_test": 0.9, "mia": 0.5}
    unlearned = {"acc_forget": shift + forget, "acc_retain": 1.0 - retain, "acc_test": 0.9,
                 "mia": 0.5, "avg_gap": avg}
    return {"models": {"unlearned": unlearned, "retrained": retrained,
                       "original": {**retrained, "acc_forget": 1.0}},
            "seconds": {"original": 2.0, "retrained": 2.0, "unlearn": 0.5}, "params": {}}


def run(i: int, owner: str, avg: float | None, lam: float = 5.0, replicate: int = 0,
        status: str = "done", **gaps) -> Run:
    done = status == "done"
    return Run(f"{i:012x}", owner, "muda", status, created=float(i),
               finished=float(i) + 0.5 if done else None,
               config={"replicate": replicate, "muda": {"lambda_da": lam}},
               result=result(avg, **gaps) if done else None)


ROOM = [run(1, "alice", 0.10, lam=1), run(2, "bob", 0.08), run(3, "alice", 0.05, lam=2),
        run(4, "carol", None, status="running"), run(5, "dave", 0.08)]


def test_the_board_ranks_each_participants_best_setting_and_leaves_out_the_unscored():
    board = room.leaderboard(ROOM)
    assert [(r["rank"], r["participant"], r["run"]) for r in board] == [
        (1, "alice", ROOM[2].id), (2, "bob", ROOM[1].id), (2, "dave", ROOM[4].id)]  # a tie
    assert board[0]["score"] == 0.05 and board[0]["sd"] is None  # one replicate: no sd
    assert board[0]["forget_gap"] == pytest.approx(0.1)
    assert board[0]["retain_gap"] == pytest.approx(0.02)
    assert board[0]["retraining"] is None  # one replicate of the baselines: no noise floor
    with pytest.raises(ValueError, match="unknown score"):
        room.leaderboard(ROOM, "acc_forget")


def test_replicates_of_one_setting_are_one_entry_scored_by_their_mean():
    runs = [run(1, "alice", 0.02), run(2, "alice", 0.06, replicate=1, shift=0.04),
            run(3, "bob", 0.05)]
    board = room.leaderboard(runs)
    assert [(r["participant"], r["replicates"]) for r in board] == [("alice", 2), ("bob", 1)]
    alice = board[0]
    assert alice["score"] == pytest.approx(0.04) and alice["sd"] == pytest.approx(0.0283, 1e-2)
    assert alice["run"] == runs[0].id  # its lowest replicate's run, the one a click opens


def test_the_noise_floor_marks_who_is_indistinguishable_from_retraining():
    # two replicates whose retrained models differ by 0.04 in acc_forget alone: the floor's
    # avg-gap is 0.04 over the four avg-gap metrics, 0.01
    runs = [run(1, "alice", 0.005), run(2, "alice", 0.009, replicate=1, shift=0.04),
            run(3, "bob", 0.05), run(4, "bob", 0.03, replicate=1, shift=0.04)]
    summary = room.summary(runs)
    assert summary["floor"]["avg_gap"] == pytest.approx(0.01)
    assert summary["box"] == pytest.approx((0.04, 0.0))
    marks = {r["participant"]: r["retraining"] for r in summary["board"]}
    assert marks == {"alice": True, "bob": False}
    # the replicates' baselines jobs may say it instead (no method run on the second one)
    floor, _ = room.reference(runs[:1], [result(0.0), result(0.0, shift=0.08)])
    assert floor["avg_gap"] == pytest.approx(0.02)
    rows = room.board_rows(summary["board"], "avg_gap")
    assert [r["retraining"] for r in rows] == ["≈ retrain", ""]
    assert list(rows[0]) == ["rank", "participant", "run", "method", "avg_gap", "avg_gap sd",
                             "retraining", "forget gap", "retain gap", "replicates"]


def test_the_final_score_ranks_higher_first_and_is_marked_against_retrainings_own():
    row = {"forgetting": {"final_score": {"value": 0.5, "sd": 0.02}}, "replicates": 6,
           "abs_gap": {}, "mean": {}, "sd": {}}
    assert room.score(row, room.FINAL) == (0.5, 0.02)
    assert room.indistinguishable(row, room.FINAL, {}, (0.55, 0.1)) is True
    assert room.indistinguishable(row, room.FINAL, {}, (0.8, 0.1)) is False
    assert room.indistinguishable(row, room.FINAL, {}, (None, None)) is None
    # runs of one replicate have no final score: nobody is on that board yet
    assert room.leaderboard(ROOM, room.FINAL) == []


def test_the_roster_lists_everyone_with_their_latest_and_best_run():
    board = room.leaderboard(ROOM)
    roster = {r["participant"]: r for r in room.roster(ROOM, board)}
    assert list(roster) == ["alice", "bob", "carol", "dave"]
    assert roster["alice"]["runs"] == 2 and roster["alice"]["latest"] == ROOM[2].id
    assert roster["alice"]["best"] == ROOM[2].id and roster["alice"]["rank"] == 1
    carol = roster["carol"]
    assert (carol["status"], carol["active"], carol["best"]) == ("running", 1, None)


def test_every_finished_run_is_a_point_and_each_participants_best_is_flagged():
    summary = room.summary(ROOM)
    points = {p["run"]: p for p in summary["points"]}
    assert set(points) == {r.id for r in ROOM if r.status == "done"}
    assert {i for i, p in points.items() if p["best"]} == {ROOM[1].id, ROOM[2].id, ROOM[4].id}


def test_the_room_figure_draws_participants_their_best_the_front_and_the_floor():
    points = [{"run": "r1", "participant": "alice", "method": "muda", "forget_gap": 0.1,
               "retain_gap": 0.05, "best": False},
              {"run": "r2", "participant": "alice", "method": "muda", "forget_gap": 0.02,
               "retain_gap": 0.03, "best": True},
              {"run": "r3", "participant": "bob", "method": "ga", "forget_gap": 0.01,
               "retain_gap": 0.2, "best": True}]
    fig = room_figure(points, box=(0.04, 0.01))
    traces = {t.name: t for t in fig.data}
    assert list(traces) == ["alice", "bob", "best of each", "Pareto front"]
    assert [c[0] for c in traces["alice"].customdata] == ["r1", "r2"]  # a click opens a run
    best = traces["best of each"]
    assert list(best.text) == ["alice", "bob"] and [c[0] for c in best.customdata] == ["r2", "r3"]
    front = traces["Pareto front"]
    assert list(front.x) == [0.01, 0.02] and list(front.y) == [0.2, 0.03]
    (shape,) = fig.layout.shapes
    assert (shape.x0, shape.y0, shape.x1, shape.y1) == (0, 0, 0.04, 0.01)
    assert [a.text for a in fig.layout.annotations] == [NOISE_LABEL]
    big = room_figure(points, large=True)  # projector type, on every part of the chart
    assert big.layout.xaxis.tickfont.size > fig.layout.xaxis.tickfont.size
    assert big.layout.legend.font.size > fig.layout.legend.font.size
    assert not room_figure(points).layout.shapes  # no floor: no grey corner


def test_the_room_version_moves_with_new_runs_and_statuses_not_with_progress(tmp_path):
    from dimalign.store import Store

    store = Store(tmp_path / "runs.sqlite")
    mine = dict(kind="unlearn", preset="digits-class", method="muda", config={})
    empty = store.room_version(["exp-a"])
    run_id = store.create_run(owner="alice", experiment="exp-a", **mine)
    store.create_run(owner="bob", experiment="exp-b", **mine)  # another experiment
    queued = store.room_version(["exp-a"])
    assert queued != empty and queued[0] == 1
    store.update(run_id, progress=0.5)
    assert store.room_version(["exp-a"]) == queued
    store.update(run_id, status="running", started=1.0)
    running = store.room_version(["exp-a"])
    assert running != queued
    store.update(run_id, status="done", finished=2.0)
    assert store.room_version(["exp-a"]) != running
    assert store.room_version(["exp-a", "exp-b"])[0] == 2
    store.close()
