"""The run store on its own: schema migration from a file the previous schema wrote, and
find-or-create under concurrency (separate processes, separate connections)."""

import multiprocessing
import shutil
import sqlite3
from pathlib import Path

import pytest

from dimalign.store import SCHEMA_VERSION, Store, StoreError

V1 = Path(__file__).parent / "data" / "store-v1.sqlite"  # see data/make_store_v1.py
V4 = Path(__file__).parent / "data" / "store-v4.sqlite"  # see data/make_store_v4.py
V4_KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdefgh"}
TINY = ["train.epochs=2"]


def columns(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[1] for row in db.execute("PRAGMA table_info(runs)")]


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
                   .fetchone()[0])


@pytest.fixture()
def old_store(tmp_path) -> Path:
    path = tmp_path / "runs.sqlite"
    shutil.copy(V1, path)
    assert version(path) == 1 and "experiment" not in columns(path)
    return path


def test_a_schema_1_store_keeps_its_runs_and_gets_the_experiment_column(old_store):
    from dimalign.config import build_config
    from dimalign.jobs import submit
    from dimalign.train import experiment_key

    store = Store(old_store)
    assert version(old_store) == SCHEMA_VERSION and "experiment" in columns(old_store)
    every = store.runs()
    assert len(every) == 6  # nothing lost
    runs = {(r.owner, r.kind, r.status): r for r in every if r.status != "failed"}
    stale, other = sorted((r for r in every if r.status == "failed"),
                          key=lambda r: r.preset != "digits-class")
    tiny = experiment_key(build_config("digits-class", TINY))
    base, done = runs["shared", "baselines", "done"], runs["alice", "unlearn", "done"]
    assert base.experiment == tiny == base.share_key
    assert done.experiment == tiny and runs["bob", "unlearn", "queued"].experiment == tiny
    assert runs["alice", "embed", "done"].experiment == tiny  # its source's experiment
    assert stale.config["scenario"]["classes"] == [99]
    assert stale.experiment is None  # no longer validates: in no experiment
    assert other.experiment == experiment_key(build_config("digits-random", TINY)) != tiny
    # metrics and artifacts came along
    assert [s for s, _ in store.curve(done.id, "acc_forget")] == [0, 1, 2]
    assert set(store.artifacts(done.id)) == {"result"}
    assert done.result["models"]["unlearned"]["acc_forget"] == 0.05

    # listed by experiment, in SQL; a new run joins its experiment
    listed = {r.id for r in store.runs(kind="unlearn", experiment=tiny)}
    assert listed == {done.id, runs["bob", "unlearn", "queued"].id}
    new = submit(store, preset="digits-class", overrides=TINY, owner="carol")
    assert store.get(new).experiment == tiny
    assert [r.id for r in store.runs(kind="unlearn", experiment=tiny, owner="carol")] == [new]
    store.close()

    again = Store(old_store)  # opening a migrated store changes nothing
    kept = {r.id: r.experiment for r in again.runs()}
    assert {i: kept[i] for i in [r.id for r in every] + [new]} == {
        **{r.id: r.experiment for r in every}, new: tiny}
    again.close()


def test_a_schema_4_store_keeps_its_runs_and_owners_and_gets_the_challenge_tables(tmp_path):
    path = tmp_path / "runs.sqlite"
    shutil.copy(V4, path)
    assert version(path) == 4 and not {"challenges", "submissions"} & tables(path)
    store = Store(path)
    assert version(path) == SCHEMA_VERSION == 5
    assert {"challenges", "submissions"} <= tables(path)
    every = store.runs()
    assert sorted((r.owner, r.kind, r.status) for r in every) == [
        ("alice", "unlearn", "done"), ("bob", "unlearn", "queued"),
        ("shared", "baselines", "done")]  # nothing lost
    runs = {r.owner: r for r in every}
    alice = runs["alice"]
    assert alice.result["models"]["unlearned"]["avg_gap"] == 0.02
    assert [s for s, _ in store.curve(alice.id, "acc_forget")] == [0, 1, 2]
    assert runs["bob"].sweep == "5eeb5eeb5eeb" and alice.experiment == runs["shared"].experiment
    for owner, key in V4_KEYS.items():  # the owners' keys still open their runs
        store.check_owner_key(owner, key, runs[owner].id)
    assert store.challenges() == [] and store.challenge_version() == (0, None, 0)

    # a challenge on the upgraded store takes alice's finished run (given the times a real
    # run records, which the fixture's hand-made result lacks: the board ranks none without)
    store.update(alice.id, result={**alice.result, "seconds": {"retrained": 2.0, "unlearn": 1.0}})
    cid = store.publish_challenge(title="Part 1", instructions="", preset="digits-class",
                                  overrides=TINY, experiments=[alice.experiment],
                                  methods=["muda"], metric="avg_gap")
    store.submit_to_challenge(cid, alice.id, "alice", V4_KEYS["alice"])
    # and keeps one challenge open, as a new store does: its index refuses a second even
    # from raw SQL
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT sql FROM sqlite_master WHERE name = 'challenges_one_open'"
                          ).fetchone()[0].startswith("CREATE UNIQUE INDEX")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"), store.write() as db:
        db.execute("INSERT INTO challenges (title, instructions, preset, overrides, "
                   "experiments, methods, metric, created, opened, changed) VALUES "
                   "('Part 2', '', 'digits-class', '[]', '[]', '[]', 'avg_gap', 0, 0, 0)")
    assert [c.title for c in store.challenges()] == ["Part 1"]
    store.close()
    again = Store(path)  # opening an upgraded store changes nothing
    assert [r.id for r in again.submissions(cid)] == [alice.id]
    assert {r.id for r in again.runs()} == {r.id for r in every}
    again.close()


def test_a_store_from_a_newer_dimalign_is_refused(tmp_path):
    path = tmp_path / "runs.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                   (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match="newer dimalign"):
        Store(path)


def test_runs_are_filtered_in_sql_and_queue_positions_are_fifo(tmp_path):
    store = Store(tmp_path / "runs.sqlite")
    ids = [store.create_run(owner=who, kind=kind, preset="p", method="m", config={},
                            experiment=exp)
           for who, kind, exp in (("ann", "unlearn", "e1"), ("ben", "unlearn", "e1"),
                                  ("ann", "baselines", "e1"), ("ann", "unlearn", "e2"))]
    assert [r.id for r in store.runs(owner="ann", kind="unlearn", experiment="e1")] == ids[:1]
    assert [r.id for r in store.runs(experiment="e1", oldest_first=True)] == ids[:3]
    assert [r.id for r in store.runs(experiment="e1", limit=1)] == [ids[2]]
    store.update(ids[1], status="done")
    assert [store.queue_position(i) for i in ids] == [1, None, 2, 3]
    assert [r.id for r in store.runs(statuses=("done",))] == [ids[1]]
    store.update(ids[1], status="queued")  # another owner's queued run stands before no one
    assert [store.queue_position(i) for i in ids] == [1, 1, 2, 3]
    store.close()


def _race(path: str, keys: int, barrier, out) -> None:
    store = Store(Path(path))
    got = []
    for k in range(keys):
        barrier.wait()  # every process asks for key k at the same moment
        got.append(store.find_or_create_run(
            share_key=f"key-{k}", owner="shared", kind="baselines", preset="p",
            method="retrain", config={"k": k}, experiment=f"key-{k}"))
    store.close()
    out.put(got)


def test_find_or_create_in_racing_processes_makes_one_run_per_key(tmp_path, monkeypatch):
    path, procs, keys = tmp_path / "runs.sqlite", 4, 15
    Store(path).close()  # the schema exists before the race
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_race, args=(str(path), keys, barrier, out))
               for _ in range(procs)]
    for p in workers:
        p.start()
    answers = [out.get(timeout=120) for _ in workers]
    for p in workers:
        p.join(60)
    assert [p.exitcode for p in workers] == [0] * procs
    store = Store(path)
    for k in range(keys):
        (run,) = store.runs(share_key=f"key-{k}")  # exactly one run per key
        assert {answer[k] for answer in answers} == {run.id}
        assert run.status == "queued" and run.experiment == f"key-{k}"
    # a finished run is not reused by default (baselines); `reuse` says what is
    store.update(answers[0][0], status="done")
    fresh = store.find_or_create_run(share_key="key-0", owner="shared", kind="baselines",
                                     preset="p", method="retrain", config={})
    assert fresh != answers[0][0]
    assert store.find_or_create_run(share_key="key-0", reuse=("done",), owner="x",
                                    kind="embed", preset="p", method="m",
                                    config={}) == answers[0][0]
    store.close()


def test_a_filter_the_store_does_not_know_is_refused_not_ignored(tmp_path, monkeypatch):
    store = Store(tmp_path / "runs.sqlite")
    with pytest.raises(TypeError, match="unknown run filter status"):
        store.count(status="done")  # would count every run if ignored
    store.close()
    monkeypatch.setattr("sqlite3.sqlite_version_info", (3, 24, 0))
    with pytest.raises(StoreError, match="needs SQLite 3.25 or newer"):
        Store(tmp_path / "other.sqlite")
