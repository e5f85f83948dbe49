"""The Ray job backend on a real cluster: a head and two worker nodes of different resources
(`ray.cluster_utils.Cluster`, every node a set of processes on this machine), the real store and
the real scheduler. Jobs land on both nodes and store what the local backend stores; a node
removed mid-run leaves its run `interrupted`, and `resume` finishes it from the checkpoint that
came back. Nodes get their own homes (DIMALIGN_RAY_SCRATCH): nothing they write reaches the
head's home except through Ray."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import pytest

from dimalign import checked, paths
from dimalign.audit import AuditSettings, audit_path
from dimalign.config import build_config
from dimalign.daemon import scheduler_running, stop_scheduler
from dimalign.jobs import cancel, resume, submit, submit_audit, submit_embedding
from dimalign.scheduler import Scheduler, Slot
from dimalign.store import Store
from dimalign.train import baselines_cached, cache_key, cache_path

MIB = 2**20
NODES = ("node_a", "node_b")


@dataclass
class Cluster:
    cluster: object
    nodes: dict  # resource name -> the node that has it
    scratch: object  # the nodes' homes live under it
    data: object  # DIMALIGN_RAY_DATA: every node home's data/

    def add(self, name: str):
        self.nodes[name] = self.cluster.add_node(num_cpus=1, resources={name: 1},
                                                 object_store_memory=80 * MIB)

    def node_of(self, device: str) -> str:
        """Which of NODES ran a job, from the device its run records."""
        import ray

        for node in ray.nodes():
            if node["Alive"] and node["NodeID"][:8] in device:
                return next(n for n in NODES if n in node["Resources"])
        raise AssertionError(f"no live node in {device!r}")


def _stop_background_scheduler() -> None:
    stop_scheduler()
    end = time.monotonic() + 60
    while scheduler_running():
        assert time.monotonic() < end, "the background scheduler did not stop"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_baselines):
    """One cluster for the module: a head without CPUs (no job runs there) and two nodes of one
    CPU each, told apart by a custom resource. The baselines are cached on the head first."""
    import ray
    from ray.cluster_utils import Cluster as RayCluster

    _stop_background_scheduler()  # a local one would take our jobs
    scratch = tmp_path_factory.mktemp("ray-nodes")
    data = tmp_path_factory.mktemp("ray-data")  # the nodes' datasets (digits needs none)
    env = {"RAY_USAGE_STATS_ENABLED": "0", "DIMALIGN_RAY_SCRATCH": str(scratch),
           "DIMALIGN_RAY_DATA": str(data)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the nodes' processes inherit it
    made = RayCluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": 80 * MIB, "include_dashboard": False})
    c = Cluster(made, {}, scratch, data)
    for name in NODES:
        c.add(name)
    ray.init(address=made.address, include_dashboard=False, log_to_driver=False)
    yield c
    ray.shutdown()
    made.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _unlearned(store, run_id) -> dict:
    return store.get(run_id).result["models"]["unlearned"]


def _same_numbers(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float) and isinstance(b[key], float):
            assert math.isclose(a[key], b[key], rel_tol=1e-6, abs_tol=1e-9), (key, a[key], b[key])
        else:
            assert a[key] == b[key], key


def _losses(store, run_id) -> dict:
    """A run's loss curves (deterministic, unlike the probe's timing-dependent points)."""
    return {k: v for k, v in store.curves(run_id).items() if k.startswith("loss_")}


def _same_curves(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert [s for s, _ in a[key]] == [s for s, _ in b[key]], key
        assert all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-7)
                   for (_, x), (_, y) in zip(a[key], b[key], strict=True)), key


def test_jobs_land_on_both_nodes_and_store_what_the_local_backend_stores(cluster, cli, tiny,
                                                                          drain, monkeypatch):
    # the background scheduler every command starts, on the cluster: the path `make app` takes
    monkeypatch.setenv("DIMALIGN_BACKEND", "ray")
    monkeypatch.setenv("DIMALIGN_RAY_ADDRESS", cluster.cluster.address)
    # baselines not cached yet: a node trains them, and they come back to the head's cache
    fresh = [*tiny, "seed=3"]
    ids = [cli("submit", *[a for s in fresh for a in ("--set", s)], "--owner", owner,
               "--no-start").stdout.strip() for owner in ("ana", "ben")]
    try:
        for run_id in ids:
            watched = cli("watch", run_id)  # starts the scheduler, follows the run to its end
            assert watched.returncode == 0, watched.stderr
        # and the film jobs the runs queued as they ended: a scheduler stopped while one is
        # just starting on a node may leave that node its inputs (a known edge, see
        # RayScheduler.close); this test is about jobs that ran to their end
        waiting, end = Store(), time.monotonic() + 120

        def films_left() -> list:
            return [r for r in waiting.runs(statuses=("queued", "running"), limit=None)
                    if r.parent_id in ids]

        while films_left() and time.monotonic() < end:
            time.sleep(0.2)
        assert not films_left()
        waiting.close()
    finally:
        stopped = cli("scheduler", "--stop")
        _stop_background_scheduler()
    assert stopped.returncode == 0 and "stops once its running jobs" in stopped.stderr
    store = Store()
    runs = [store.get(i) for i in ids]
    assert [r.status for r in runs] == ["done", "done"], [r.error for r in runs]
    baselines = store.get(runs[0].depends_on)
    assert baselines.status == "done" and " on Ray node " in baselines.device
    cfg = build_config("digits-class", fresh)
    assert baselines_cached(cfg)
    assert all(checked.verify(cache_path(cache_key(cfg, role))) for role in ("original",
                                                                            "retrained"))
    assert {cluster.node_of(r.device) for r in runs} == set(NODES)
    for run in runs:  # every file came back into the head's home, checksummed
        files = store.artifacts(run.id)
        assert {"checkpoint", "result", "geometry", "telemetry", "unlearned"} <= set(files)
        assert all(p.is_relative_to(paths.home()) and checked.verify(p) for p in files.values())
        assert store.curves(run.id)["da"]
    # each node has a home of its own, its data/ the nodes' DIMALIGN_RAY_DATA; the nodes
    # never saw the store, and kept no run folder
    homes = sorted(cluster.scratch.iterdir())
    assert len(homes) == 2 and all((h / "data").resolve() == cluster.data for h in homes)
    left = [p.relative_to(cluster.scratch) for p in cluster.scratch.rglob("*")]
    assert not [p for p in left if p.name.startswith("runs.sqlite")], left
    assert not [p for p in left if {"runs", "parents"} & set(p.parts)
                and (cluster.scratch / p).is_file()], left

    monkeypatch.setenv("DIMALIGN_BACKEND", "local")
    local = submit(store, preset="digits-class", overrides=fresh, owner="cy")
    scheduler = Scheduler(store, slots=[Slot(None)])
    try:
        drain(scheduler, lambda: store.get(local).terminal, timeout=120)
    finally:
        scheduler.close()
    assert store.get(local).status == "done", store.get(local).error
    for run in runs:
        _same_numbers(_unlearned(store, run.id), _unlearned(store, local))
        assert run.result["models"]["original"] == store.get(local).result["models"]["original"]
        _same_curves(_losses(store, run.id), _losses(store, local))
    store.close()


def test_a_sweep_on_ray_goes_through_the_queue_and_only_the_head_writes_the_store(cluster, cli,
                                                                                tiny):
    # the one Ray path: `sweep --backend ray` queues as `submit` does (owner check, cap) and
    # starts the Ray-backed scheduler, whose tasks run on the nodes and send their mail home
    ran = cli("sweep", "--backend", "ray", "--address", cluster.cluster.address, "--set",
              *tiny, "--grid", "muda.lambda_da=1,5", "--owner", "swp")
    assert ran.returncode == 0, ran.stderr
    ids = ran.stdout.split()
    try:
        for run_id in ids:
            watched = cli("watch", run_id)
            assert watched.returncode == 0, watched.stderr
    finally:
        _stop_background_scheduler()
    store = Store()
    runs = [store.get(i) for i in ids]
    assert [(r.status, r.executor) for r in runs] == [("done", "ray")] * 2, [r.error for r in runs]
    assert {r.config["muda"]["lambda_da"] for r in runs} == {1.0, 5.0} and runs[0].sweep
    assert all(" on Ray node " in r.device and store.curves(r.id)["da"] for r in runs)
    left = [p.name for p in cluster.scratch.rglob("*")]  # a node never opened the store
    assert not [name for name in left if name.startswith("runs.sqlite")], left
    store.close()


def test_a_lost_node_interrupts_its_run_and_resume_finishes_it(cluster, tiny, drain):
    from dimalign.ray_backend import RayScheduler

    store = Store()
    scheduler = RayScheduler(store)  # in this process: the test ticks it
    long = [*tiny, "muda.epochs=30"]
    ids = [submit(store, preset="digits-class", overrides=long, owner=o) for o in ("dan", "eve")]

    def checkpointed() -> bool:  # both running, each with a checkpoint back on the head
        return all(store.get(i).status == "running" and "checkpoint" in store.artifacts(i)
                   for i in ids)

    try:
        drain(scheduler, checkpointed, timeout=120)
        on = {cluster.node_of(store.get(i).device): i for i in ids}
        assert set(on) == set(NODES)
        lost, kept = on["node_b"], on["node_a"]
        cluster.cluster.remove_node(cluster.nodes.pop("node_b"))
        drain(scheduler, lambda: store.get(lost).status != "running"
              and store.get(kept).terminal, timeout=120)
        assert store.get(lost).status == "interrupted", store.get(lost).error
        assert "Ray node or worker was lost" in store.get(lost).error
        assert store.get(kept).status == "done", store.get(kept).error  # nothing else lost
        saved = checked.load_torch(store.artifacts(lost)["checkpoint"])
        assert saved["step"] > 0
        written = store.last_step(lost)

        cluster.add("node_b")
        resume(store, lost)
        # meanwhile: a fork of the finished run (its weights travel to the node) and a long
        # training of baselines, both cancelled while they run (the fork stops by itself at
        # its next step; training does not look, and Ray cancels it), and the aligned UMAP of
        # the finished run's features
        scheduler.cancel_grace = 0.5
        fork = submit(store, preset="digits-class", overrides=["muda.epochs=400"],
                      owner="fay", parent_id=kept)
        slow = submit(store, preset="digits-class", overrides=["train.epochs=300", "seed=11"],
                      method="retrain", owner="hal")
        drain(scheduler, lambda: store.get(fork).status == "running" and store.curves(fork)
              and store.get(slow).status == "running", timeout=120)
        cancel(store, fork)
        cancel(store, slow)
        drain(scheduler, lambda: store.get(fork).terminal, timeout=60)
        # resumed, the fork runs on (a new job: the old cancel is not its), and stops again
        stopped_at = store.last_step(fork)
        resume(store, fork)
        drain(scheduler, lambda: store.last_step(fork) > stopped_at, timeout=60)
        cancel(store, fork)
        umap = submit_embedding(store, kept, 30, "gus")
        audit = submit_audit(store, kept, "gus", AuditSettings(relearn_steps=3))
        drain(scheduler, lambda: all(store.get(i).terminal
                                     for i in (lost, fork, slow, umap, audit)), timeout=180)
    finally:
        scheduler.close()
    assert store.get(fork).status == "cancelled", store.get(fork).error
    assert store.get(fork).error.startswith("cancelled at step")  # it stopped by itself
    assert (store.get(slow).status, store.get(slow).error) == ("cancelled", "cancelled")  # Ray
    assert store.get(umap).status == "done", store.get(umap).error
    assert checked.verify(store.artifacts(kept)["embedding-30"])
    # an audit on a node: the run's result, weights and baselines went there, its file came back
    assert store.get(audit).status == "done", store.get(audit).error
    audited = checked.load_json(audit_path(store.get(kept).folder, AuditSettings(relearn_steps=3)))
    assert list(audited["relearn"]) == ["original", "retrained", "unlearned"]
    assert store.get(lost).status == "done", store.get(lost).error
    # the resumed run ends where the one left alone did, its curves whole and unrepeated
    _same_numbers(_unlearned(store, lost), _unlearned(store, kept))
    steps = [s for s, _ in store.curves(lost)["epoch"]]
    assert steps == sorted(set(steps)) == [s for s, _ in store.curves(kept)["epoch"]]
    assert written < steps[-1]
    _same_curves(_losses(store, lost), _losses(store, kept))
    store.close()


@pytest.mark.parametrize(("env", "said"), [
    ({"DIMALIGN_RAY_CPUS": "1e9"}, "a job asks Ray for 1e+09 CPUs (DIMALIGN_RAY_CPUS) but no "
     "node of the cluster has that many (at most 1, 2 in all); lower DIMALIGN_RAY_CPUS or add a "
     "larger node"),
    ({"DIMALIGN_RAY_GPUS": "1"}, "a job asks Ray for 1 GPU (DIMALIGN_RAY_GPUS) but no node of "
     "the cluster has that many (at most 0, 0 in all); lower DIMALIGN_RAY_GPUS or add a larger "
     "node"),
])
def test_a_job_larger_than_any_node_fails_in_one_line(cluster, tiny, drain, monkeypatch, env,
                                                      said):
    # it used to wait for a Ray node forever; it now waits DIMALIGN_RAY_WAIT_SECONDS for a
    # node that fits (an autoscaler's, a restarting one), then fails
    from dimalign.ray_backend import RayScheduler

    for key, value in {**env, "DIMALIGN_RAY_WAIT_SECONDS": "60"}.items():
        monkeypatch.setenv(key, value)
    store = Store()
    scheduler = RayScheduler(store)
    run_id = submit(store, preset="digits-class", overrides=tiny, owner="kim")
    try:
        for _ in range(5):
            scheduler.tick()
        assert store.get(run_id).status == "queued"  # within the wait: still queued
        scheduler.wait_for_nodes = 0.0  # the wait is over
        drain(scheduler, lambda: store.get(run_id).terminal, timeout=30)
    finally:
        scheduler.close()
    assert (store.get(run_id).status, store.get(run_id).error) == ("failed", said)
    store.close()


def test_stopping_waits_for_the_jobs_begun_on_a_node_not_for_those_waiting(cluster, tiny,
                                                                          drain):
    from dimalign.ray_backend import RayScheduler

    store = Store()
    scheduler = RayScheduler(store)
    begun, waiting = (submit(store, preset="digits-class", overrides=tiny, owner=o)
                      for o in ("ida", "jon"))
    task = scheduler.task

    class Unplaceable:  # the waiting run's task asks for a resource no node has
        @staticmethod
        def options(**ask):
            if ask["name"].endswith(waiting):
                ask["resources"] = {"no_such_node": 1}
            return task.options(**ask)

    scheduler.task = Unplaceable()
    try:
        drain(scheduler, lambda: store.get(begun).device and store.get(waiting).status ==
              "running", timeout=60)  # one job on a node, the other waiting for one
        running = store.get(begun).status
    finally:
        start = time.monotonic()
        scheduler.close(timeout=600)
        took = time.monotonic() - start
    assert running == "running"
    assert store.get(begun).status == "done", store.get(begun).error  # waited for
    assert store.get(waiting).status == "interrupted"  # not waited for: resumable
    assert store.get(waiting).error.startswith("its scheduler stopped")
    assert took < 120
    store.close()


def test_stopping_with_the_jobs_mail_lost_still_leaves_every_run_resumable(cluster, tiny,
                                                                           drain):
    """The mailbox actor gone (its node's raylet lost it, say): `close` cannot learn more of
    its jobs, so it stops at once and leaves their runs interrupted, not `running` until the
    next scheduler's recovery."""
    import ray

    from dimalign.ray_backend import RayScheduler

    store = Store()
    scheduler = RayScheduler(store)
    run = submit(store, preset="digits-class", overrides=[*tiny, "muda.epochs=200"],
                 owner="kim")
    try:
        drain(scheduler, lambda: bool(store.get(run).device), timeout=60)  # begun on a node
        running = store.get(run).status
        ray.kill(scheduler.mailbox)
    finally:
        start = time.monotonic()
        scheduler.close(timeout=600)
        took = time.monotonic() - start
    assert running == "running"
    assert store.get(run).status == "interrupted" and store.get(run).error.startswith(
        "its scheduler stopped")
    assert took < 60  # it did not wait out the timeout for mail that cannot come
    store.close()


def test_a_job_that_fails_of_itself_as_its_scheduler_stops_keeps_its_error():
    """Stopping leaves a job resumable however it ended (a flag's stop, Ray's cancel, a lost
    worker), except a failure of its own: that is the run's error, not lost in `interrupted`."""
    from dimalign.ray_backend import STOPPED, Flight, recorded

    def flight(**how) -> Flight:
        return Flight(ref=None, inputs={}, token="t", **how)

    failed = {"status": "failed", "finished": 1.0, "error": "ValueError: bad shape"}
    cancelled = {"status": "cancelled", "finished": 1.0, "error": "cancelled"}
    assert recorded(flight(stopping=True), failed) == failed
    assert recorded(flight(stopping=True), cancelled)["error"] == STOPPED
    interrupted = recorded(flight(stopping=True, cancel_sent=5.0), failed)  # Ray dropped it
    assert interrupted == {"status": "interrupted", "pid": None, "error": STOPPED}
    assert recorded(flight(cancel_sent=5.0), failed)["status"] == "cancelled"  # a user's cancel
    done = {"status": "done", "finished": 1.0}
    assert recorded(flight(stopping=True), done) == done == recorded(flight(), done)


@pytest.mark.parametrize(("env", "named"), [
    ({"DIMALIGN_BACKEND": "cloud"}, "DIMALIGN_BACKEND"),
    ({"DIMALIGN_BACKEND": "ray", "DIMALIGN_RAY_GPUS": "1.5"}, "DIMALIGN_RAY_GPUS"),
    ({"DIMALIGN_BACKEND": "ray", "DIMALIGN_RAY_CPUS": "two"}, "DIMALIGN_RAY_CPUS"),
])
def test_a_bad_backend_setting_is_one_line_before_anything_is_queued(cli, tiny, env, named,
                                                                    monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    store = Store()
    before = len(store.runs())
    ran = cli("submit", *[a for s in tiny for a in ("--set", s)], "--owner", "fay")
    assert ran.returncode == 2 and named in ran.stderr and len(ran.stderr.splitlines()) == 1
    assert len(store.runs()) == before
    store.close()


def test_a_cluster_that_does_not_answer_is_one_line(cli_process, tmp_path):
    ran = cli_process("scheduler", "--backend", "ray", "--address", "127.0.0.1:1",
                      home=tmp_path, timeout=60)
    assert ran.returncode == 1 and ran.stdout == ""
    assert ran.stderr.strip().splitlines() == [
        "dimalign: cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused); start it "
        "with `ray start --head` there, or check the address"]


def test_an_address_where_something_but_no_ray_cluster_answers_is_one_line(cli_process,
                                                                           tmp_path):
    # it used to print Ray's warnings about the GCS every few seconds, for minutes
    import socket

    with socket.socket() as listener:  # connections wait in its backlog, unanswered
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        ran = cli_process("scheduler", "--backend", "ray", "--address", address, home=tmp_path,
                          timeout=60, env=dict(os.environ, DIMALIGN_RAY_CONNECT_SECONDS="3"))
    assert ran.returncode == 1 and ran.stdout == ""
    assert ran.stderr.strip().splitlines() == [
        f"dimalign: cannot reach the Ray cluster at {address}: something answers there but no "
        "Ray cluster did within 3 s; check the address (Ray's GCS port, 6379 by default)"]


@pytest.mark.parametrize("sent", ["../runs/x.pt", "/etc/passwd", "runs", "data/x.npz",
                                  "runs/../../x", "scheduler.lock"])
def test_a_file_a_node_sends_lands_only_under_runs_or_models(sent):
    from dimalign.ray_backend import _in_home

    with pytest.raises(ValueError, match="outside runs/ and models/"):
        _in_home(sent)
    assert _in_home("runs/0123456789ab/result.json") == paths.runs_dir() / "0123456789ab" / \
        "result.json"
