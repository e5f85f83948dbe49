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
    assert store.open_challenge(first)  # again: the other stays closed
    assert store.current_challenge().id == first and store.challenge(first).open
    assert store.challenge(first).opened == one.opened  # its budget keeps its start
    assert store.challenge(first).deadline == one.deadline
    publish(store, title="Part 3")
    assert [c.open for c in store.challenges()] == [True, False, False]
    with pytest.raises(StoreError, match="no challenge 99"):
        store.close_challenge(99)


@pytest.mark.parametrize("fields, message", [
    ({"title": " "}, "needs a title"), ({"methods": []}, "one method at least"),
    ({"experiments": []}, "needs an experiment"), ({"budget": -5}, "above 0"),
    ({"metric": "acc_forget"}, "ranks by avg_gap or final_score, not 'acc_forget'")])
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
            r"another experiment than the challenge's \(digits-class train.epochs=2\): its "
            r"data, forget set, seed or model differ",
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
    # closed: where one finished, and no invitation to enter what takes no entry
    assert "You finished **2nd of 3**" in contest.standing_text(board, "bob", "avg_gap", 1,
                                                               is_open=False)
    closed = contest.standing_text(board, "dan", "avg_gap", 0, is_open=False)
    assert closed == "You had no entry in this challenge." and "Submit" not in closed
    assert contest.board_rows(board, "avg_gap")[0] == {
        "rank": 1, "participant": "`alice`", "run": entries["alice", 0.03], "method": "muda",
        "avg-gap": "0.0300", "≈ retrain": ""}
    with pytest.raises(ValueError, match="ranks by avg_gap or final_score"):
        contest.standings([], "acc_forget")


def test_the_texts_a_banner_shows(store):
    assert [contest.place(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 102, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "102nd", "111th"]
    challenge = store.challenge(publish(store, budget=10))
    assert contest.time_left(challenge, challenge.opened + 30) == "10 min left"
    assert contest.time_left(challenge, challenge.opened + 9 * 60) == "1 min left"
    assert contest.time_left(challenge, challenge.opened + 9.5 * 60) == "30 s left"
    assert contest.time_left(challenge, challenge.opened + 9 * 60 + 0.5) == "1 min left"
    assert contest.time_left(challenge, challenge.opened + 9 * 60 + 1.5) == "59 s left"
    assert contest.time_left(challenge, challenge.deadline + 1) == "time is up"
    assert contest.time_left(store.challenge(publish(store)), time.time()) is None
    assert contest.experiment_text(challenge) == "`digits-class` with `train.epochs=2`"
    assert contest.entries_text({"alice": 1}) == "1 entry from 1 participant"
    assert contest.entries_text({"alice": 2, "bob": 1}) == "3 entries from 2 participants"
    assert contest.settings_text("muda", {"lambda_da": 2.0, "lambda_sd": 1.0, "mixed": True},
                                 {"lambda_da": 5.0, "lambda_sd": 1.0, "mixed": False}) == (
        "**muda**: **lambda_da = 2** (default 5) · **mixed = true** (default false) · "
        "lambda_sd = 1")


def test_opening_again_takes_only_a_closed_challenge_while_none_is_open(store):
    """A stale page's *Open it again* changes nothing: not an open challenge (its clock, its
    reveal), nor one while another is open (which it would have closed)."""
    first = publish(store)
    entry = finished(store, "alice")
    store.submit_to_challenge(first, entry, "alice")
    before = store.challenge(first)
    assert not store.open_challenge(first)  # open already
    assert store.challenge(first) == before
    store.close_challenge(first)
    store.reveal_challenge(first, entry)
    second = publish(store, title="Part 2")
    assert not store.open_challenge(first)  # another is open: neither changes
    assert store.challenge(second).open and not store.challenge(first).open
    assert store.challenge(first).revealed_run == entry
    store.close_challenge(second)
    assert store.open_challenge(first)  # closed, and none open: opened, its reveal hidden
    assert store.challenge(first).open and store.challenge(first).revealed_run is None
    with pytest.raises(StoreError, match="no challenge 99"):
        store.open_challenge(99)


def test_opening_again_keeps_the_budget_one_rule_for_every_entry(store):
    """With a budget, closing and opening again moves neither its start nor its deadline:
    an entry made before stays ranked, a run of the same window is still taken, a run queued
    before the publication is still refused; once the budget is spent, the challenge cannot
    be opened again."""
    cid = publish(store, budget=10)
    published = store.challenge(cid)
    early = finished(store, "alice", 0.05)
    store.submit_to_challenge(cid, early, "alice")
    store.close_challenge(cid)
    in_window = finished(store, "bob", 0.03)  # finished while it was closed, within budget
    store.update(in_window, created=published.opened + 1)
    before = finished(store, "carol", 0.01)
    store.update(before, created=published.opened - 1)
    assert store.open_challenge(cid)
    again = store.challenge(cid)
    assert (again.opened, again.deadline) == (published.opened, published.deadline)
    store.submit_to_challenge(cid, in_window, "bob")
    with pytest.raises(StoreError, match="queued before the challenge's 10-minute budget"):
        store.submit_to_challenge(cid, before, "carol")
    board = contest.standings(store.submissions(cid), "avg_gap")
    assert [(r["participant"], r["run"]) for r in board] == [("bob", in_window),
                                                             ("alice", early)]
    store.close_challenge(cid)
    with store.write() as db:  # its budget spent: 11 minutes since it was published
        db.execute("UPDATE challenges SET opened = opened - 660 WHERE id = ?", (cid,))
    with pytest.raises(StoreError, match="10-minute budget has run out: publish it again"):
        store.open_challenge(cid)
    assert not store.challenge(cid).open


@pytest.mark.parametrize("metric, spoil, message", [
    ("avg_gap", lambda r: None, "has no complete result to rank"),
    ("avg_gap", lambda r: {**r, "models": {"unlearned": r["models"]["unlearned"]}},
     "has no complete result to rank"),
    ("avg_gap", lambda r: {**r, "models": {**r["models"], "unlearned": {
        **r["models"]["unlearned"], "avg_gap": float("nan")}}}, "has no avg-gap to rank"),
    ("avg_gap", lambda r: {**r, "models": {**r["models"], "unlearned": {
        **r["models"]["unlearned"], "avg_gap": None}}}, "has no avg-gap to rank"),
    ("final_score", lambda r: r, "kept no forget confidences: it cannot have a final score"),
])
def test_a_finished_run_without_a_result_to_rank_is_refused(store, metric, spoil, message):
    cid = publish(store, metric=metric)
    run_id = finished(store, "alice")
    store.update(run_id, result=spoil(store.get(run_id).result))
    with pytest.raises(StoreError, match=message):
        store.submit_to_challenge(cid, run_id, "alice")
    assert store.submissions(cid) == []


def test_an_entry_with_a_nan_score_is_left_off_the_board_not_ranked_first(store):
    """An entry whose score turned NaN (here written after the entry) ranks nowhere; the
    others keep their places and the entrant is told their entry has no score."""
    cid = publish(store)
    nan, good = finished(store, "alice", 0.02), finished(store, "bob", 0.04)
    for owner, run_id in (("alice", nan), ("bob", good)):
        store.submit_to_challenge(cid, run_id, owner)
    spoilt = store.get(nan).result
    spoilt["models"]["unlearned"]["avg_gap"] = float("nan")
    store.update(nan, result=spoilt)
    board = contest.standings(store.submissions(cid), "avg_gap")
    assert [(r["rank"], r["participant"]) for r in board] == [(1, "bob")]
    assert contest.standing_text(board, "alice", "avg_gap", 1) == \
        "Your 1 entry has no avg-gap yet."


def test_two_sessions_entering_the_same_run_at_once_make_one_entry(tmp_path):
    """Two sessions of one participant (their own store connections, as two browser tabs
    have) press *Submit this run* together: the store's transaction takes one entry and
    refuses the other in one line."""
    import threading

    path = tmp_path / "runs.sqlite"
    first = Store(path)
    key = new_owner_key()
    assert first.claim_owner("alice", key)
    cid, run_id = publish(first), finished(first, "alice")
    tabs = [Store(path) for _ in range(2)]
    start, said = threading.Barrier(len(tabs)), []

    def press(tab: Store) -> None:
        start.wait()
        try:
            tab.submit_to_challenge(cid, run_id, "alice", key)
            said.append("entered")
        except StoreError as err:
            said.append(str(err))

    threads = [threading.Thread(target=press, args=(tab,)) for tab in tabs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(said) == ["entered", f"run {run_id} is entered in 'Part 1' already"]
    assert [r.id for r in first.submissions(cid)] == [run_id]
    for tab in (first, *tabs):
        tab.close()


def test_the_store_keeps_one_challenge_open_even_against_raw_sql(store):
    import sqlite3

    publish(store)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"), store.write() as db:
        db.execute("INSERT INTO challenges (title, instructions, preset, overrides, "
                   "experiments, methods, metric, created, opened, changed) VALUES "
                   "('two', '', 'p', '[]', '[]', '[]', 'avg_gap', 0, 0, 0)")
    assert [c.open for c in store.challenges()] == [True]


def test_texts_print_a_participants_name_as_typed_never_as_a_link():
    """Owner names may hold '.', '_', '@' and '-': in markdown a code span, so www.x.com is
    not a link and a_b_ no emphasis (and a backtick in any text keeps its span)."""
    assert contest.literal("www.evil.com") == "`www.evil.com`"
    assert contest.literal("a`b") == "``a`b``" and contest.literal("`a") == "`` `a ``"
    board = [{"rank": 1, "participant": "www.evil.com", "run": "0" * 12, "method": "muda",
              "score": 0.1, "retraining": None}]
    assert contest.board_rows(board, "avg_gap")[0]["participant"] == "`www.evil.com`"
    assert contest.settings_text("muda", {"variant": "_x_"}, {"variant": "plain"}) == \
        "**muda**: **variant = `_x_`** (default `plain`)"


def test_score_texts_name_the_score_and_what_the_final_score_needs():
    import numpy as np

    assert contest.score_text(np.float32("nan")) == "–" == contest.score_text(float("nan"))
    assert contest.score_text(None) == "–" and contest.score_text(np.float32(0.25)) == "0.2500"
    assert [contest.score_name(m) for m in ("avg_gap", "final_score")] == [
        "avg-gap", "final score"]
    assert "six replicates" not in contest.no_standings_text("avg_gap", 2)
    assert contest.no_standings_text("avg_gap", 2) == "No entry has an avg-gap yet."
    assert "enter each of its runs" in contest.no_standings_text("final_score", 2)
    assert contest.no_standings_text("final_score", 0).startswith("No entries yet")
    assert "six replicates" in contest.standing_text([], "dan", "final_score", 0)
    assert "six replicates" not in contest.standing_text([], "dan", "avg_gap", 0)


def test_budget_text_states_the_rule_the_store_checks(store):
    challenge = store.challenge(publish(store, budget=15))
    assert contest.budget_text(challenge) == (
        "; entries: runs queued after it was published and finished within 15 minutes of it")
    assert contest.budget_text(store.challenge(publish(store, budget=1))).endswith(
        "within 1 minute of it")
    assert contest.budget_text(store.challenge(publish(store))) == ""


# ---------------------------------------------------------------------------- the pages' side


@pytest.fixture()
def pages_store(store, monkeypatch):
    """`store` as the pages' session store (dimalign.ui.contest's `store()`)."""
    from dimalign.ui import contest as ui_contest

    monkeypatch.setattr(ui_contest, "store", lambda: store)
    return store


def test_a_participant_can_neither_publish_close_open_nor_reveal(pages_store, tiny_cfg):
    from dimalign.ui import contest as ui_contest
    from dimalign.ui.state import Identity

    store = pages_store
    cid = publish(store)
    store.submit_to_challenge(cid, finished(store, "alice"), "alice")
    participant, instructor = Identity("alice", new_owner_key()), Identity("admin", "", True)
    version = store.challenge_version()
    actions = {
        "publish": lambda who: ui_contest.publish_challenge(
            tiny_cfg, "digits-class", [], who, title="Mine", instructions="", methods=["muda"],
            metric="avg_gap", budget=None),
        "close": lambda who: ui_contest.close_challenge(cid, who),
        "reopen": lambda who: ui_contest.reopen_challenge(cid, who),
        "reveal": lambda who: ui_contest.reveal_best(cid, who),
    }
    for name, action in actions.items():
        with pytest.raises(OwnerRefused, match="only the instructor's view"):
            action(participant)
        assert store.challenge_version() == version, name  # nothing changed
    assert ui_contest.close_challenge(cid, instructor)  # the instructor's view may
    assert ui_contest.reveal_best(cid, instructor) == store.challenge(cid).revealed_run


def test_the_pages_board_judges_retraining_against_the_experiments_baselines(pages_store):
    """Entries on one replicate cannot tell a noise floor by themselves; the baselines of two
    replicates (as the Room's leaderboard reads them, `replicate_results`) can: the
    challenge's board says "≈ retrain" exactly where the Room's leaderboard does."""
    from dimalign import room
    from dimalign.ui import contest as ui_contest

    store = pages_store
    cid = publish(store)
    entry = finished(store, "alice", 0.001)
    store.submit_to_challenge(cid, entry, "alice")
    for replicate, shift in enumerate((0.0, 0.2)):  # two retrained models 0.2 apart
        base = result(0.0)
        base["models"]["retrained"] = {"acc_forget": shift, "acc_retain": 1.0}
        run_id = store.create_run(owner="shared", kind="baselines", preset="digits-class",
                                  method="baselines", experiment=EXP[replicate],
                                  config={"replicate": replicate})
        store.update(run_id, status="done", finished=time.time(), result=base)
    entries = store.submissions(cid)
    assert contest.standings(entries, "avg_gap")[0]["retraining"] is None  # entries alone
    board = ui_contest.challenge_entries(store.challenge(cid)).board
    results = ui_contest.experiment_results(EXP, store)
    assert len(results) == 2
    room_board = room.leaderboard(entries, "avg_gap", room.reference(entries, results))
    assert board[0]["retraining"] is True is room_board[0]["retraining"]


def test_the_revealed_settings_print_the_owners_name_as_typed(pages_store):
    from dimalign.ui import contest as ui_contest

    store = pages_store
    cid = publish(store)
    run_id = finished(store, "www.evil.com", 0.02)
    store.submit_to_challenge(cid, run_id, "www.evil.com")
    store.close_challenge(cid)
    store.reveal_challenge(cid, run_id)
    text = ui_contest.revealed_settings(store.challenge(cid))
    assert text.startswith(f"**Best settings**, `www.evil.com`'s run {run_id}, avg-gap 0.0200")
