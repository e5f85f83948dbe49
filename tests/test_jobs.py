"""The run store and background jobs, with real worker processes and a real SQLite file."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dimalign.daemon import scheduler_running, stop_scheduler
from dimalign.errors import ConfigError
from dimalign.jobs import cancel, queue_position, resume, submit
from dimalign.scheduler import Scheduler, Slot
from dimalign.store import Store, StoreError


@pytest.fixture()
def store(tiny_baselines, tiny):  # baselines of tiny are cached: jobs only unlearn
    stop_scheduler()  # a background one (a browser or CLI test's) would take our jobs
    end = time.monotonic() + 60
    while scheduler_running():
        assert time.monotonic() < end, "the background scheduler did not stop"
        time.sleep(0.1)
    s = Store()
    yield s
    s.close()


def status(store, run_id):
    return store.get(run_id).status


def test_store_is_wal_versioned_and_refuses_unsafe_ids_and_owners(store, tiny):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = store.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert int(version[0]) >= 1
    for bad in ("../etc", "abc", "ABCDEF123456", "0123456789ab/.."):
        with pytest.raises(StoreError, match="not a run id"):
            store.get(bad)
    for owner in ("../x", "", "a b", "x" * 65, "/root"):
        with pytest.raises(StoreError, match="owner"):
            submit(store, preset="digits-class", overrides=tiny, owner=owner)


def test_an_invalid_config_is_refused_at_submit_and_nothing_is_queued(store, tiny):
    before = len(store.runs())
    with pytest.raises(ConfigError, match="muda.lambda_da"):
        submit(store, preset="digits-class", overrides=tiny + ["muda.lambda_da=-3"])
    with pytest.raises(ConfigError, match="--method"):
        submit(store, preset="digits-class", overrides=tiny, method="forget-it-all")
    assert len(store.runs()) == before


def test_many_owners_asking_for_the_same_baselines_wait_on_one_job(store):
    overrides = ["train.epochs=1", "seed=5"]  # not cached yet
    a = submit(store, preset="digits-class", overrides=overrides, owner="alice")
    b = submit(store, preset="digits-class", overrides=overrides, owner="bob")
    c = submit(store, preset="digits-class", overrides=overrides, method="retrain",
               owner="carol")
    dep = store.get(a).depends_on
    assert dep is not None and store.get(b).depends_on == dep and c == dep
    shared = store.get(dep)
    assert (shared.kind, shared.owner, shared.status) == ("baselines", "shared", "queued")
    for run_id in (a, b):
        cancel(store, run_id)
    cancel(store, dep)


def test_scheduler_is_fair_between_owners_and_fifo_within_one(store, tiny):
    # owners no other test uses: one whose run started elsewhere in the session's home would
    # rightly be served after one never served
    ids = {who: [submit(store, preset="digits-class", overrides=tiny, owner=who)
                 for _ in range(n)] for who, n in (("fair-ann", 3), ("fair-ben", 1))}
    scheduler = Scheduler(store, slots=[Slot(None), Slot(None)], per_owner=1)
    picked = scheduler.next_runs(2)
    assert [r.id for r in picked] == [ids["fair-ann"][0], ids["fair-ben"][0]]
    assert queue_position(store, ids["fair-ann"][1]) < queue_position(store, ids["fair-ann"][2])
    for run_ids in ids.values():
        for run_id in run_ids:
            cancel(store, run_id)
    assert all(status(store, i) == "cancelled" for i in ids["fair-ann"] + ids["fair-ben"])


def test_a_run_goes_through_a_worker_process_into_the_store(store, drain, tiny):
    run_id = submit(store, preset="digits-class", overrides=tiny, owner="dora")
    scheduler = Scheduler(store, slots=[Slot(None)])
    drain(scheduler, lambda: store.get(run_id).terminal)
    run = store.get(run_id)
    assert run.status == "done", run.error
    assert run.pid and run.pid != os.getpid() and run.device == "cpu"
    assert run.result["models"]["unlearned"]["acc_forget"] is not None
    curves = store.curves(run_id)
    assert {"acc_forget", "da", "loss_da"} <= set(curves)
    assert {"result", "geometry", "unlearned", "checkpoint"} <= set(store.artifacts(run_id))

    # fork: the child starts from the parent's weights with a changed knob
    child = submit(store, preset="digits-class", overrides=["muda.lambda_da=1"],
                   owner="dora", parent_id=run_id)
    drain(scheduler, lambda: store.get(child).terminal)
    forked = store.get(child)
    assert forked.status == "done", forked.error
    assert forked.parent_id == run_id and forked.config["muda"]["lambda_da"] == 1.0
    assert forked.config["train"]["epochs"] == 2  # the rest comes from the parent


def test_cancelling_a_running_run_stops_its_worker(store, drain, tiny):
    run_id = submit(store, preset="digits-class", overrides=tiny + ["muda.epochs=400"],
                    owner="eve")
    scheduler = Scheduler(store, slots=[Slot(None)])
    drain(scheduler, lambda: store.get(run_id).status == "running" and store.curves(run_id))
    cancel(store, run_id)
    drain(scheduler, lambda: store.get(run_id).terminal)
    run = store.get(run_id)
    assert run.status == "cancelled" and "cancelled at step" in run.error


def test_kill_9_at_40_percent_then_resume_ends_with_the_uninterrupted_weights(store, drain, tiny):
    # MUDA with a retain bank: state of the method's own that a resume must restore exactly
    overrides = tiny + ["muda.epochs=60", "muda.basis=bank", "muda.bank_refresh=7",
                        "unlearn.telemetry_every=2"]
    run_id = submit(store, preset="digits-class", overrides=overrides, owner="fay")
    scheduler = Scheduler(store, slots=[Slot(None)])
    folder = store.get(run_id).folder
    drain(scheduler, lambda: (folder / "checkpoint.pt").exists()
          and store.get(run_id).progress >= 0.4)
    killed = store.get(run_id).pid
    os.kill(killed, signal.SIGKILL)
    drain(scheduler, lambda: store.get(run_id).status == "interrupted")
    kept = store.curves(run_id)
    assert kept["acc_forget"]  # the store is readable and what was written is there
    resume(store, run_id)
    drain(scheduler, lambda: store.get(run_id).terminal, timeout=180)
    run = store.get(run_id)
    assert run.status == "done", run.error
    assert run.pid != killed and scheduler.slots[0].process is not None  # a fresh worker
    after = store.curves(run_id)
    assert after["acc_forget"][: len(kept["acc_forget"])] == kept["acc_forget"]
    steps = [s for s, _ in after["acc_forget"]]
    assert steps == sorted(set(steps))  # continued, no step written twice
    assert steps[-1] > kept["acc_forget"][-1][0]
    # telemetry.json has every point, not only those after the resume (which points carry the
    # probe depends on timing; every point carries its epoch)
    saved = json.loads((folder / "telemetry.json").read_text())
    assert [p["step"] for p in saved] == [s for s, _ in store.curve(run_id, "epoch")]

    twin = submit(store, preset="digits-class", overrides=overrides, owner="fay-twin")
    drain(scheduler, lambda: store.get(twin).terminal, timeout=180)
    assert store.get(twin).status == "done"
    resumed = torch.load(folder / "unlearned.pt", weights_only=True)
    left_alone = torch.load(store.get(twin).folder / "unlearned.pt", weights_only=True)
    assert resumed.keys() == left_alone.keys()
    for key, value in left_alone.items():
        assert torch.allclose(resumed[key].double(), value.double(), atol=1e-5, rtol=0), key


def test_a_pooled_worker_runs_job_after_job_without_restarting(store, drain, tiny):
    scheduler = Scheduler(store, slots=[Slot(None)])
    try:
        first = submit(store, preset="digits-class", overrides=tiny, owner="ida")
        drain(scheduler, lambda: store.get(first).terminal)
        second = submit(store, preset="digits-class", overrides=tiny + ["muda.lambda_da=2"],
                        owner="ida")
        drain(scheduler, lambda: store.get(second).terminal)
        a, b = store.get(first), store.get(second)
        assert (a.status, b.status) == ("done", "done"), (a.error, b.error)
        # the store keeps what the Compare page scores replicates with
        kept = a.result["forget_confidence"]
        assert set(kept) == set(a.result["models"]) and len(kept["unlearned"]) > 10
        # one warm process: the two runs (and the film frames each left for later)
        assert a.pid == b.pid and scheduler.slots[0].jobs >= 2
    finally:
        scheduler.close()


@pytest.mark.parametrize("limit", ["jobs", "memory"])
def test_a_worker_past_its_job_count_or_memory_bound_is_replaced(store, limit, drain, tiny):
    scheduler = Scheduler(store, slots=[Slot(None)])
    if limit == "jobs":
        scheduler.max_jobs = 1
    else:
        scheduler.max_memory_mb = 1.0  # every worker is past it after its first job
    try:
        ids = [submit(store, preset="digits-class", overrides=tiny + [f"muda.lambda_da={x}"],
                      owner=f"rec-{limit}") for x in (1, 3)]
        drain(scheduler, lambda: all(store.get(i).terminal for i in ids))
        runs = [store.get(i) for i in ids]
        assert [r.status for r in runs] == ["done", "done"], [r.error for r in runs]
        assert runs[0].pid != runs[1].pid  # the second job ran in a fresh worker
    finally:
        scheduler.close()


def test_cancel_stops_a_pooled_job_within_a_second_and_the_worker_stays(store, drain, tiny):
    scheduler = Scheduler(store, slots=[Slot(None)])
    try:
        run_id = submit(store, preset="digits-class", overrides=tiny + ["muda.epochs=400"],
                        owner="jon")
        drain(scheduler, lambda: store.get(run_id).status == "running" and store.curves(run_id))
        worker = store.get(run_id).pid
        asked = time.monotonic()
        cancel(store, run_id)
        while not store.get(run_id).terminal and time.monotonic() - asked < 10:
            time.sleep(0.02)
        took = time.monotonic() - asked
        assert store.get(run_id).status == "cancelled" and took <= 1.0, took
        after = submit(store, preset="digits-class", overrides=tiny, owner="jon")
        drain(scheduler, lambda: store.get(after).terminal)
        assert store.get(after).status == "done" and store.get(after).pid == worker
    finally:
        scheduler.close()


def test_a_worker_found_dead_after_a_restart_is_marked_interrupted(store, tiny):
    run_id = submit(store, preset="digits-class", overrides=tiny, owner="gus")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    store.update(run_id, status="running", pid=proc.pid, heartbeat=time.time())
    proc.kill()
    proc.wait()
    Scheduler(store, slots=[Slot(None)]).recover()  # a new scheduler, as after a restart
    run = store.get(run_id)
    assert run.status == "interrupted" and "resume" in run.error


def _hammer(home: str, worker: int, steps: int) -> None:
    os.environ["DIMALIGN_HOME"] = home
    store = Store()
    run_id = store.create_run(owner=f"w{worker}", kind="unlearn", preset="digits-class",
                              method="muda", config={})
    for step in range(steps):
        store.log_metrics(run_id, step, {"loss": float(step), "acc": 0.5})


def test_four_processes_writing_at_once_lose_nothing_and_never_see_a_locked_database(store):
    ctx = multiprocessing.get_context("spawn")
    home = os.environ["DIMALIGN_HOME"]
    procs = [ctx.Process(target=_hammer, args=(home, i, 300)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    for i in range(4):
        (run,) = store.runs(owner=f"w{i}")
        curve = store.curve(run.id, "loss")
        assert [s for s, _ in curve] == list(range(300))


def test_cli_submit_runs_watch_export_cancel_resume(store, tmp_path, cli):
    proc = cli("submit", "--set", "train.epochs=2", "--owner", "hal")
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    watched = cli("watch", run_id)
    assert watched.returncode == 0 and f"{run_id} done" in watched.stdout
    listed = json.loads(cli("runs", "--json", "--owner", "hal", "--kind", "unlearn").stdout)
    assert listed[0]["id"] == run_id and listed[0]["status"] == "done" and listed[0]["pid"]
    exported = cli("export", run_id, str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    names = {p.name for p in (tmp_path / "out").rglob("*")}
    assert {"config.json", "metrics.csv", "curves.html", "report.html", "unlearned.pt"} <= names
    assert "acc_forget" in (tmp_path / "out" / "metrics.csv").read_text()
    assert run_id in (tmp_path / "out" / "report.html").read_text()

    queued = cli("submit", "--set", "train.epochs=2", "--set", "muda.epochs=400", "--owner",
                      "hal", "--no-start")  # long: the running scheduler may take it at once
    other = queued.stdout.strip()
    assert "cancel" in cli("cancel", other).stdout  # cancelled, or requested if started
    assert cli("watch", other).returncode == 1
    assert store.get(other).status == "cancelled"
    again = cli("resume", run_id)
    assert again.returncode == 2 and "only interrupted, failed or cancelled" in again.stderr
    bad = cli("watch", "../../etc")
    assert bad.returncode == 2 and "not a run id" in bad.stderr and "Traceback" not in bad.stderr
    invalid = cli("submit", "--set", "scenario.classes=99")
    assert invalid.returncode == 2 and "scenario.classes" in invalid.stderr


def test_submit_wait_prints_the_run_json_and_fails_when_the_run_does_not_finish(store, cli):
    proc = cli("submit", "--set", "train.epochs=2", "--owner", "kim", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # exactly one object, as `run --json` prints
    assert {"preset", "config", "device", "models", "seconds", "samples",
            "artifacts"} <= set(result)
    assert result["models"]["unlearned"]["acc_forget"] is not None
    assert cli("submit", "--wait", "--no-start").returncode == 2

    waiting = subprocess.Popen(
        [sys.executable, "-m", "dimalign", "submit", "--set", "train.epochs=2", "--set",
         "muda.epochs=400", "--owner", "kim", "--wait"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while not [r for r in store.runs(owner="kim", statuses=("running",)) if store.curves(r.id)]:
        assert time.monotonic() < end and waiting.poll() is None, waiting.stderr.read()
        time.sleep(0.2)
    (running,) = store.runs(owner="kim", statuses=("running",))
    cancel(store, running.id)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1 and f"{running.id} cancelled" in err and out == ""


def test_local_sweep_runs_every_combination(store, cli):
    proc = cli("sweep", "--method", "muda", "--set", "train.epochs=2", "--grid",
                    "muda.lambda_da=1,5", "--grid", "muda.lambda_sd=0,1", "--owner", "swp")
    assert proc.returncode == 0, proc.stderr
    ids = proc.stdout.split()
    assert len(ids) == 4
    for run_id in ids:
        assert cli("watch", run_id).returncode == 0
    knobs = {(store.get(i).config["muda"]["lambda_da"], store.get(i).config["muda"]["lambda_sd"])
             for i in ids}
    assert knobs == {(1.0, 0.0), (1.0, 1.0), (5.0, 0.0), (5.0, 1.0)}
