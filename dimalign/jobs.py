"""Jobs: submit, cancel, resume and fork runs; the scheduler that keeps a pool of warm worker
processes busy with bounded concurrency and fairness between owners; recovery of dead workers.

One scheduler serves a $DIMALIGN_HOME (an exclusive lock file says which). `ensure_scheduler`
starts it in the background when none is running, so `dimalign submit` and the app just submit.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from dimalign import paths
from dimalign.checked import DiskFull
from dimalign.config import build_config, override_config
from dimalign.methods import get_method
from dimalign.store import ACTIVE, Run, Store, StoreError, check_owner, pid_alive
from dimalign.train import experiment_key

SHARED_OWNER = "shared"  # owner of baseline jobs every owner can wait on
HEARTBEAT_TIMEOUT = 15.0  # seconds without a heartbeat before a running worker counts as dead


# ---------------------------------------------------------------------------- submitting


def baselines_cached(cfg) -> bool:
    from dimalign.train import cached_meta

    return all(cached_meta(cfg, role) is not None for role in ("original", "retrained"))


def submit_baselines(store: Store, cfg, preset: str) -> str | None:
    """The shared job that trains this config's baselines: an existing one if it is queued or
    running, a new one otherwise; None when both models are already cached."""
    if baselines_cached(cfg):
        return None
    key = experiment_key(cfg)  # the baselines' identity is the experiment's
    return store.find_or_create_run(
        share_key=key, reuse=ACTIVE, owner=SHARED_OWNER, kind="baselines", preset=preset,
        method="retrain", config=cfg.to_dict(), experiment=key)


def submit(store: Store, *, preset: str, overrides: Iterable[str] = (), method: str = "muda",
           owner: str = "local", parent_id: str | None = None) -> str:
    """Validate and queue a run; returns its id. An invalid config raises ConfigError and
    queues nothing. A fork (`parent_id`) starts from the parent's weights with its config plus
    `overrides`."""
    check_owner(owner)
    get_method(method)
    if parent_id is not None:
        parent = store.get(parent_id)
        cfg = override_config(parent.config, overrides)
        preset = parent.preset
    else:
        cfg = build_config(preset, overrides)
    experiment = experiment_key(cfg)
    depends_on = submit_baselines(store, cfg, preset)
    kind = "baselines" if method == "retrain" else "unlearn"
    if kind == "baselines" and parent_id is None:
        if depends_on is not None:
            return depends_on  # asking for baselines = waiting on the shared job
        return store.create_run(owner=owner, kind="baselines", preset=preset, method=method,
                                config=cfg.to_dict(), share_key=experiment,
                                experiment=experiment)
    return store.create_run(owner=owner, kind=kind, preset=preset, method=method,
                            config=cfg.to_dict(), parent_id=parent_id, depends_on=depends_on,
                            experiment=experiment)


def submit_embedding(store: Store, source_id: str, samples: int, owner: str) -> str:
    """Queue the aligned UMAP of a finished run's features (one job per run and size)."""
    source = store.get(source_id)
    if source.status != "done":
        raise StoreError(f"run {source_id} is {source.status}; manifolds need a finished run")
    if not 30 <= int(samples) <= 20000:
        raise StoreError(f"sample size must lie in 30..20000, got {samples}")
    from dimalign.embed import embedding_path

    # a finished job is reused while its file is there (not when it was set aside as damaged)
    done = ("done",) if embedding_path(source.folder, samples).exists() else ()
    return store.find_or_create_run(
        share_key=f"embed:{source_id}:{int(samples)}", reuse=(*ACTIVE, *done), owner=owner,
        kind="embed", preset=source.preset, method="umap",
        config={"source": source_id, "samples": int(samples)}, parent_id=source_id,
        experiment=source.experiment)


def cancel(store: Store, run_id: str) -> Run:
    return store.request_cancel(run_id)


def resume(store: Store, run_id: str) -> Run:
    """Queue an interrupted, failed or cancelled run again; it continues from its last
    checkpoint and keeps the metrics it already wrote."""
    run = store.get(run_id)
    if run.status in ACTIVE or run.status == "done":
        raise StoreError(f"run {run_id} is {run.status}; only interrupted, failed or cancelled "
                         "runs can be resumed")
    if run.depends_on and store.get(run.depends_on).status in ("interrupted", "failed",
                                                               "cancelled"):
        resume(store, run.depends_on)  # its baselines first, or it would fail again at once
    store.transition(run_id, ("interrupted", "failed", "cancelled"), status="queued",
                     pid=None, error=None, finished=None, cancel_requested=0)
    return store.get(run_id)


# ---------------------------------------------------------------------------- scheduling


@dataclass
class Slot:
    """One long-lived worker process and the job it is running, if any."""

    gpu: int | None
    process: multiprocessing.process.BaseProcess | None = None
    conn: Connection | None = None
    run_id: str | None = None  # handed to the worker, until it says it is idle again
    ready: bool = False  # the worker has its imports and waits for a job
    jobs: int = 0
    failures: int = 0  # workers in a row that died before they were ready
    retry_at: float = 0.0


def default_slots() -> list[Slot]:
    """One job per GPU, or one on the CPU; DIMALIGN_WORKERS overrides the count."""
    import torch

    gpus = torch.cuda.device_count()
    count = int(os.environ.get("DIMALIGN_WORKERS", gpus or 1))
    return [Slot(i % gpus if gpus else None) for i in range(count)]


def recycle_limits() -> tuple[int, float]:
    """(jobs, MiB of resident memory) after which a worker is replaced by a fresh one."""
    return (int(os.environ.get("DIMALIGN_WORKER_JOBS", 200)),
            float(os.environ.get("DIMALIGN_WORKER_MEMORY_MB", 8192)))


def worker_threads(workers: int) -> int:
    """torch threads per worker: half the cores, shared by the workers. The other half stays
    with the web server and the pages; on 2 cores a second busy torch thread spins in
    barriers against them and slowed small runs several-fold. DIMALIGN_WORKER_THREADS sets it."""
    if "DIMALIGN_WORKER_THREADS" in os.environ:
        return max(1, int(os.environ["DIMALIGN_WORKER_THREADS"]))
    return max(1, (os.cpu_count() or 2) // 2 // max(1, workers))


class Scheduler:
    """Keeps one warm worker process per slot and hands each a job at a time: workers import
    torch and keep recent experiments in memory once, so a run pays only for its own work.
    A worker that dies is replaced and its run marked `interrupted`; one past its job count
    or memory bound finishes its job and is replaced."""

    def __init__(self, store: Store, slots: list[Slot] | None = None, per_owner: int = 1,
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT):
        self.store = store
        self.slots = slots if slots is not None else default_slots()
        self.per_owner = per_owner
        self.heartbeat_timeout = heartbeat_timeout
        self.ctx = multiprocessing.get_context("spawn")
        self.exiting: list[multiprocessing.process.BaseProcess] = []
        self.max_jobs, self.max_memory_mb = recycle_limits()
        self.threads = worker_threads(len(self.slots))
        # run id -> how it ended, as its worker could not record it (the disk was full)
        self.endings: dict[str, dict] = {}
        self.trouble: str | None = None  # the last problem logged, so it is logged once

    def tick(self) -> None:
        """One round. A full disk stops it where it is: it is logged once, and the next
        round tries again (what was not recorded is still to do)."""
        try:
            self.record_endings()
            self.reap()
            self.recover()
            self.fail_orphans()
            self.start_eligible()
        except DiskFull as err:
            self.log(f"dimalign scheduler: {err}; trying again every tick")
            return
        if self.trouble is not None:
            self.log(None)

    def log(self, line: str | None) -> None:
        """One line on stderr (the scheduler's log) when the trouble changes; None: it is over.
        Writing the log may itself fail on a full disk: that is not worth dying for."""
        if line == self.trouble:
            return
        self.trouble = line
        with contextlib.suppress(OSError, ValueError):
            print(line or "dimalign scheduler: writing to the store works again",
                  file=sys.stderr, flush=True)

    def record_endings(self) -> None:
        """Record how runs ended that their worker could not write (the store was full)."""
        for run_id, ending in list(self.endings.items()):
            self.store.transition(run_id, ("running",), **ending)
            del self.endings[run_id]

    def spawn(self, slot: Slot) -> None:
        from dimalign.worker import serve

        ours, theirs = self.ctx.Pipe()
        slot.process = self.ctx.Process(
            target=serve, args=(str(paths.home()), slot.gpu, theirs, self.max_jobs,
                                self.max_memory_mb, self.threads),
            name="dimalign-worker", daemon=True)  # dies with a scheduler that exits
        slot.process.start()
        theirs.close()
        slot.conn, slot.ready, slot.run_id = ours, False, None

    def listen(self, slot: Slot) -> None:
        """Read what the worker said: ready for a job, or done with one (and whether it is
        leaving to be replaced)."""
        try:
            while slot.conn.poll():
                message = slot.conn.recv()
                if message[0] == "ready":
                    slot.ready, slot.failures = True, 0
                elif message[0] == "idle":
                    ending = message[2] if len(message) > 2 else None
                    if ending is not None and ending["status"] == "queued":
                        slot.retry_at = time.monotonic() + 5.0  # not started: disk full
                    elif ending is not None:  # it ended, but the store could not record it
                        self.endings[slot.run_id] = ending
                    slot.run_id, slot.jobs = None, slot.jobs + 1
                    slot.ready = not message[1]  # a recycled worker exits; reaped below
        except (EOFError, OSError):
            pass

    def reap(self) -> None:
        self.exiting = [p for p in self.exiting if p.is_alive()]
        for slot in self.slots:
            if slot.process is None:
                continue
            self.listen(slot)
            if slot.process.is_alive():
                continue
            slot.process.join()
            if slot.run_id is not None:  # died inside a job without recording its end
                run = self.store.get(slot.run_id)
                if run.status == "running" and run.pid == slot.process.pid:
                    self.store.transition(run.id, ("running",), status="interrupted",
                                          error=f"its worker exited with code "
                                                f"{slot.process.exitcode}; resume it to "
                                                "continue from its last checkpoint", pid=None)
            elif not slot.ready and slot.jobs == 0:  # died while starting: back off
                slot.failures += 1
                slot.retry_at = time.monotonic() + min(30.0, 2.0 ** slot.failures)
            slot.conn.close()
            slot.process, slot.conn, slot.run_id, slot.ready, slot.jobs = None, None, None, \
                False, 0

    def recover(self) -> None:
        """Running runs whose worker is gone (killed, crashed, machine restarted)."""
        ours = {s.run_id for s in self.slots if s.run_id is not None} | set(self.endings)
        now = time.time()
        for run in self.store.runs(statuses=("running",)):
            if run.id in ours:
                continue
            stale = run.heartbeat is None or now - run.heartbeat > self.heartbeat_timeout
            if not pid_alive(run.pid) or stale:
                self.store.transition(run.id, ("running",), status="interrupted", pid=None,
                                      error="its worker stopped (killed, crashed or the machine "
                                            "restarted); resume it to continue from its last "
                                            "checkpoint")

    def fail_orphans(self) -> None:
        for run in self.store.runs(statuses=("queued",)):
            if run.depends_on:
                dep = self.store.get(run.depends_on)
                if dep.status in ("failed", "cancelled", "interrupted"):
                    self.store.transition(run.id, ("queued",), status="failed",
                                          finished=time.time(),
                                          error=f"its baselines job {dep.id} {dep.status}: "
                                                f"{dep.error or ''}".strip())

    def next_runs(self, free: int) -> list[Run]:
        """Fair order: owners with fewer running jobs first, FIFO within an owner. A run handed
        to a worker that has not claimed it yet counts as running."""
        handed = {s.run_id for s in self.slots if s.run_id is not None}
        busy: dict[str, int] = {}
        owners = {r.id: r.owner for r in self.store.runs(statuses=("running",))}
        owners.update({i: self.store.get(i).owner for i in handed if i not in owners})
        for owner in owners.values():
            busy[owner] = busy.get(owner, 0) + 1
        queued = [r for r in self.store.runs(statuses=("queued",), executor="local",
                                             oldest_first=True) if r.id not in handed]
        ready = [r for r in queued
                 if not r.depends_on or self.store.get(r.depends_on).status == "done"]
        picked: list[Run] = []
        while ready and len(picked) < free:
            owners = {r.owner for r in ready if busy.get(r.owner, 0) < self.cap(r.owner)}
            if not owners:
                break
            owner = min(owners, key=lambda o: (busy.get(o, 0),
                                               next(r.created for r in ready if r.owner == o)))
            run = next(r for r in ready if r.owner == owner)
            ready.remove(run)
            picked.append(run)
            busy[owner] = busy.get(owner, 0) + 1
        return picked

    def cap(self, owner: str) -> int:
        return len(self.slots) if owner == SHARED_OWNER else self.per_owner

    def start_eligible(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None and now >= slot.retry_at:
                self.spawn(slot)
        free = [s for s in self.slots if s.ready and s.run_id is None and now >= s.retry_at]
        for slot, run in zip(free, self.next_runs(len(free)), strict=False):
            slot.conn.send(run.id)
            slot.run_id = run.id

    def busy(self) -> bool:
        return any(s.run_id is not None for s in self.slots) or bool(self.exiting) or bool(
            self.store.runs(statuses=("queued",), executor="local", limit=1))

    def close(self, timeout: float = 30.0) -> None:
        """Tell every worker to leave after its current job, and wait for them."""
        for slot in self.slots:
            if slot.process is None:
                continue
            with contextlib.suppress(OSError):
                slot.conn.send(None)
        end = time.monotonic() + timeout
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(max(0.0, end - time.monotonic()))
                if slot.process.is_alive():
                    slot.process.terminate()
                slot.conn.close()
                slot.process, slot.conn, slot.run_id, slot.ready = None, None, None, False

    def warm_umap(self) -> multiprocessing.Process | None:
        """Compile UMAP's kernels in the background once per NUMBA_CACHE_DIR (not in a slot)."""
        from dimalign.embed import is_warm
        from dimalign.worker import warm_umap

        if is_warm():
            return None
        process = self.ctx.Process(target=warm_umap, args=(str(paths.home()),),
                                   name="dimalign-warm-umap", daemon=False)
        process.start()
        self.exiting.append(process)
        return process

    def serve(self, idle_exit: float | None = 600.0, poll: float = 0.15) -> None:
        """Tick until there has been nothing to do for `idle_exit` seconds (None: forever)."""
        self.warm_umap()
        idle_since = time.monotonic()
        while True:
            self.tick()
            if self.busy():
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                return
            time.sleep(poll)


def queue_position(store: Store, run_id: str) -> int | None:
    """1-based place among queued runs (FIFO by submission), None if not queued."""
    return store.queue_position(run_id)


# ---------------------------------------------------------------------------- the daemon


def _lock_path():
    return paths.home() / "scheduler.lock"


def scheduler_running() -> bool:
    path = _lock_path()
    if not path.exists():
        return False
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def serve_forever(idle_exit: float | None = 600.0) -> int:
    """Run the scheduler here if no other holds this home's lock. Returns 0, or 1 if taken."""
    paths.home().mkdir(parents=True, exist_ok=True)
    with open(_lock_path(), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 1
        fh.seek(0)
        fh.truncate()
        # who holds it, for `dimalign scheduler --stop` and tests (unbuffered: on a full disk
        # it goes unsaid, and the lock still holds)
        with contextlib.suppress(OSError):
            os.write(fh.fileno(), str(os.getpid()).encode())
        store = Store()
        scheduler = Scheduler(store)
        # SIGTERM (`dimalign scheduler --stop`): workers finish their runs, then leave
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            scheduler.serve(idle_exit=idle_exit)
        finally:
            scheduler.close(timeout=600.0)
            store.close()
    return 0


def stop_scheduler() -> bool:
    """Stop this home's background scheduler (its workers finish their runs first)."""
    if not scheduler_running():
        return False
    pid = int(_lock_path().read_text().strip() or 0)
    if pid:
        os.kill(pid, 15)
    return bool(pid)


def ensure_scheduler() -> None:
    """Start a background scheduler for this home unless one is running."""
    if scheduler_running():
        return
    paths.home().mkdir(parents=True, exist_ok=True)
    log = open(paths.home() / "scheduler.log", "a")  # noqa: SIM115 - handed to the child
    subprocess.Popen([sys.executable, "-m", "dimalign", "scheduler"], stdout=log, stderr=log,
                     stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
