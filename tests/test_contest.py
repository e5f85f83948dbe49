"""A workshop's challenges: the store's challenges and entries (each entry checked as it is
made, on a real SQLite store), and their standings and texts as data (dimalign/contest.py). On
hand-made runs, no training."""

import time

import pytest

from dimalign import contest
from dimalign.store import OwnerRefused, Store, StoreError, entry_refusal, new_owner_key

EXP = ["exp-r0", "exp-r1"]  # a challenge's experiment: the keys of its replicates


def result(avg: float, forget: float = 0.1) -> dict:
    retrained = {"acc_forget": 0.0, "acc_retain": 1.0}
    return {"models": {"unlearned": {"acc_forget": forget, "acc_retain": 0.98, "avg_gap": avg},
                       "retrained": retrained, "original": {**retrained, "acc_forget": 1.0}},
            "seconds": {"original": 2.0, "retrained": 2.0, "unlearn": 0.5}}


@pytest.fixture()
def store(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    yield store
    store.close()


def finished(store: Store, owner: str, avg: float = 0.05, method: str = "muda",
             experiment: str = EXP[0], status: str = "done", lam: float = 5.0,
             replicate: int = 0) -> str:
    """A run of `owner`, finished now (or left in `status`)."""
    run_id = store.create_run(owner=owner, kind="unlearn", preset="digits-class",
                              method=method, experiment=experiment,
                              config={"replicate": replicate, method: {"lambda_da": lam}})
    if status == "done":
        store.update(run_id, status="done", started=time.time(), finished=time.time(),
                     result=result(avg))
    else:
        store.update(run_id, status=status)
    return run_id


def publish(store: Store, **fields) -> int:
    return store.publish_challenge(**{
        "title": "Part 1", "instructions": "Lowest **avg-gap** wins.", "preset": "digits-class",
        "overrides": ["train.epochs=2"], "experiments": EXP, "methods": ["muda", "ft"],
        "metric": "avg_gap", **fields})


def test_one_challenge_is_open_at_a_time_and_earlier_ones_stay_listed_closed(store):
    assert store.current_challenge() is None and store.challenges() == []
    first = publish(store, budget=10)
    one = store.challenge(first)
    assert one.open and one.title == "Part 1" and one.overrides == ["train.epochs=2"]
    assert one.experiments == EXP and one.methods == ["muda", "ft"] and one.budget == 10
    assert one.deadline == pytest.approx(one.opened + 600)
    second = publish(store, title="  Part 2  ")
    assert [c.id for c in store.challenges()] == [second, first]
    assert not store.challenge(first).open and store.challenge(second).title == "Part 2"
    assert store.current_challenge().id == second
    assert store.close_challenge(second) and not store.close_challenge(second)  # once
    assert store.current_challenge().id == second  # the newest closed one, when none is open
    store.open_challenge(first)  # again: the other stays closed
    assert store.current_challenge().id == first and store.challenge(first).open
    assert store.challenge(first).opened > one.opened  # its budget starts again
    publish(store, title="Part 3")
    assert [c.open for c in store.challenges()] == [True, False, False]
    with pytest.raises(StoreError, match="no challenge 99"):
        store.close_challenge(99)


@pytest.mark.parametrize("fields, message", [
    ({"title": " "}, "needs a title"), ({"methods": []}, "one method at least"),
    ({"experiments": []}, "needs an experiment"), ({"budget": -5}, "above 0")])
def test_a_challenge_without_what_it_needs_is_refused(store, fields, message):
    with pytest.raises(StoreError, match=message):
        publish(store, **fields)
    assert store.challenges() == []


def test_an_entry_is_checked_by_the_store_and_a_refusal_writes_nothing(store):
    key = new_owner_key()
    assert store.claim_owner("alice", key)
    cid = publish(store)
    good = finished(store, "alice")
    cases = {  # run -> what the one line says
        finished(store, "bob"): "belongs to another owner",  # the key's check
        finished(store, "alice", status="running"): "is running: only a finished run",
        finished(store, "alice", method="salun"): "ran salun; this challenge allows muda, ft",
        finished(store, "alice", experiment="exp-other"):
            r"another experiment than the challenge's \(digits-class train.epochs=2\)",
    }
    for run_id, message in cases.items():
        with pytest.raises(StoreError, match=message):
            store.submit_to_challenge(cid, run_id, "alice", key)
    with pytest.raises(StoreError, match="is not yours"):  # without a key: the run's check
        store.submit_to_challenge(cid, finished(store, "bob"), "alice")
    with pytest.raises(OwnerRefused, match="does not hold the key"):
        store.submit_to_challenge(cid, good, "alice", new_owner_key())
    with pytest.raises(OwnerRefused, match="read-only"):  # the instructor's view: no key
        store.submit_to_challenge(cid, good, "admin", "")
    assert store.submissions(cid) == []
    version = store.challenge_version()
    store.submit_to_challenge(cid, good, "alice", key)
    assert [r.id for r in store.submissions(cid)] == [good]
    assert store.challenge_version()[:2] == version[:2]  # an entry: the entries only
    assert store.challenge_version()[2] == version[2] + 1
    with pytest.raises(StoreError, match="entered in 'Part 1' already"):
        store.submit_to_challenge(cid, good, "alice", key)
    store.close_challenge(cid)
    with pytest.raises(StoreError, match="'Part 1' is closed"):
        store.submit_to_challenge(cid, finished(store, "alice"), "alice", key)
    assert [r.id for r in store.submissions(cid)] == [good]
    assert [r.id for r in store.submissions(cid, owner="bob")] == []


def test_with_a_time_budget_an_entry_is_made_after_the_opening_and_within_the_budget(store):
    before = finished(store, "alice")
    cid = publish(store, budget=5)
    challenge = store.challenge(cid)
    with pytest.raises(StoreError, match="queued before the challenge's 5-minute budget"):
        store.submit_to_challenge(cid, before, "alice")
    late = finished(store, "alice")
    store.update(late, finished=challenge.deadline + 1)
    with pytest.raises(StoreError, match="finished after the challenge's 5-minute budget"):
        store.submit_to_challenge(cid, late, "alice")
    in_time = finished(store, "alice")
    store.submit_to_challenge(cid, in_time, "alice")  # no key: the machine's own user
    assert [r.id for r in store.submissions(cid)] == [in_time]
    # without a budget, a run made before the challenge counts
    assert entry_refusal(store.challenge(publish(store)), store.get(before), "alice") is None


def test_the_best_settings_are_revealed_only_once_closed_and_only_of_an_entry(store):
    cid = publish(store)
    entry, other = finished(store, "alice"), finished(store, "bob")
    store.submit_to_challenge(cid, entry, "alice")
    with pytest.raises(StoreError, match="close the challenge before"):
        store.reveal_challenge(cid, entry)
    store.close_challenge(cid)
    with pytest.raises(StoreError, match="not an entry"):
        store.reveal_challenge(cid, other)
    store.reveal_challenge(cid, entry)
    assert store.challenge(cid).revealed_run == entry
    store.open_challenge(cid)  # open again: hidden until revealed again
    assert store.challenge(cid).revealed_run is None


def test_the_room_version_moves_with_challenges_and_entries(store):
    run_id = finished(store, "alice")
    drawn = store.room_version(EXP)
    cid = publish(store)
    published = store.room_version(EXP)
    assert published != drawn and published[:7] == drawn[:7]  # the runs did not move
    store.submit_to_challenge(cid, run_id, "alice")
    entered = store.room_version(EXP)
    assert entered != published
    store.close_challenge(cid)
    assert store.room_version(EXP) != entered


def test_standings_rank_each_entrants_best_entry_by_the_challenges_score(store):
    cid = publish(store)
    entries = {("alice", 0.09): finished(store, "alice", 0.09, lam=1),
               ("alice", 0.03): finished(store, "alice", 0.03, lam=2),
               ("bob", 0.05): finished(store, "bob", 0.05),
               ("carol", 0.2): finished(store, "carol", 0.2, method="ft")}
    for (owner, _), run_id in entries.items():
        store.submit_to_challenge(cid, run_id, owner)
    board = contest.standings(store.submissions(cid), "avg_gap")
    assert [(r["rank"], r["participant"], r["run"]) for r in board] == [
        (1, "alice", entries["alice", 0.03]), (2, "bob", entries["bob", 0.05]),
        (3, "carol", entries["carol", 0.2])]
    assert contest.standing(board, "bob")["of"] == 3 and contest.standing(board, "dan") is None
    assert "You are **2nd of 3** with avg-gap 0.0500" in contest.standing_text(
        board, "bob", "avg_gap", 1)
    assert "no entry yet" in contest.standing_text(board, "dan", "avg_gap", 0)
    assert "six replicates" in contest.standing_text([], "bob", "final_score", 1)
    assert contest.board_rows(board, "avg_gap")[0] == {
        "rank": 1, "participant": "alice", "run": entries["alice", 0.03], "method": "muda",
        "avg-gap": "0.0300", "≈ retrain": ""}
    with pytest.raises(ValueError, match="ranks by avg_gap or final_score"):
        contest.standings([], "acc_forget")


def test_the_texts_a_banner_shows(store):
    assert [contest.place(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 102, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "102nd", "111th"]
    challenge = store.challenge(publish(store, budget=10))
    assert contest.time_left(challenge, challenge.opened + 30) == "10 min left"
    assert contest.time_left(challenge, challenge.opened + 9.5 * 60) == "1 min left"
    assert contest.time_left(challenge, challenge.deadline + 1) == "time is up"
    assert contest.time_left(store.challenge(publish(store)), time.time()) is None
    assert contest.experiment_text(challenge) == "`digits-class` with `train.epochs=2`"
    assert contest.entries_text({"alice": 1}) == "1 entry from 1 participant"
    assert contest.entries_text({"alice": 2, "bob": 1}) == "3 entries from 2 participants"
    assert contest.settings_text("muda", {"lambda_da": 2.0, "lambda_sd": 1.0, "mixed": True},
                                 {"lambda_da": 5.0, "lambda_sd": 1.0, "mixed": False}) == (
        "**muda**: **lambda_da = 2** (default 5) · **mixed = true** (default false) · "
        "lambda_sd = 1")
