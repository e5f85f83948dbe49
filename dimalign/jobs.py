"""Jobs: submit, cancel, resume and fork runs; the scheduler that keeps a pool of warm worker
processes busy with bounded concurrency and fairness between owners; recovery of dead workers.

One scheduler serves a $DIMALIGN_HOME (an exclusive lock file says which). `ensure_scheduler`
starts it in the background when none is running, so `dimalign submit` and the app just submit;
`watch`, `cancel`, `resume` and every page of the app also start one, so a scheduler that died
(killed, or the machine restarted) is replaced by the next command or page. A new scheduler
marks the runs of workers that died with the old one `interrupted`; a worker that outlived its
scheduler finishes its job and leaves, and holds its slot until then.

Jobs run in this machine's worker processes (the local backend, the default) or, with
`--backend ray` / DIMALIGN_BACKEND=ray, as tasks on a Ray cluster (`dimalign.ray_backend`,
whose scheduler is this one with Ray tasks for slots).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from dimalign import paths
from dimalign.checked import DiskFull
from dimalign.config import build_config, override_config
from dimalign.errors import ConfigError
from dimalign.methods import get_method
from dimalign.store import (
    ACTIVE,
    ADMIN_OWNER,
    SHARED_OWNER,
    OwnerRefused,
    Run,
    Store,
    StoreError,
    check_owner,
    check_sweep_id,
    pid_alive,
)
from dimalign.train import experiment_key

HEARTBEAT_TIMEOUT = 15.0  # seconds without a heartbeat before a running worker counts as dead
WORKER_STOPPED = ("its worker stopped (killed, crashed or the machine restarted); resume it to "
                  "continue from its last checkpoint")


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


def _authorize(store: Store, owner: str | None, key: str | None,
               run_id: str | None = None) -> None:
    """Who may act as `owner`. `key` None: the machine's own user (the CLI, tests, benchmarks),
    who owns every run. A key (the web app always passes its session's, "" for the
    instructor's read-only view) must be `owner`'s, and the run, if any, `owner`'s."""
    if key is not None:
        store.check_owner_key(owner, key, run_id)


class QueueFull(StoreError):
    """An owner asked to queue more runs than the per-owner cap allows; nothing was queued."""


def queue_cap() -> int:
    """Runs one owner may have queued at once: DIMALIGN_QUEUE_CAP, else 2,000. The scheduler
    is fair across owners whatever the queue's length; the cap keeps one person's sweep from
    filling the store (and the instructor's view) for everyone."""
    return _env_number("DIMALIGN_QUEUE_CAP", int, 2000, low=1)


def check_queue_room(store: Store, owner: str, adding: int) -> None:
    """QueueFull (one line) when `adding` more runs would take `owner` past the cap."""
    cap = queue_cap()
    queued = store.count(owner=owner, statuses=("queued",))
    if queued + adding > cap:
        have = f"has {queued:,} runs queued; " if queued else ""
        raise QueueFull(f"owner {owner!r} {have}{adding:,} more would pass the cap of {cap:,} "
                        "queued runs per owner (DIMALIGN_QUEUE_CAP): cancel some (dimalign "
                        "cancel --sweep ID) or wait for them; nothing was queued")


def submit(store: Store, *, preset: str, overrides: Iterable[str] = (), method: str = "muda",
           owner: str = "local", parent_id: str | None = None, key: str | None = None,
           sweep: str | None = None) -> str:
    """Validate and queue a run; returns its id. An invalid config raises ConfigError and
    queues nothing. A fork (`parent_id`) starts from the parent's weights with its config plus
    `overrides`. `key`: the web app's proof that the caller is `owner` (see `_authorize`); a
    fork then must be of one of `owner`'s runs. The shared baselines' owner and the
    instructor's are not names to submit under. `sweep`: the sweep it belongs to. An owner at
    the queue cap gets QueueFull."""
    check_owner(owner)
    if owner.lower() in (SHARED_OWNER, ADMIN_OWNER):
        raise OwnerRefused(f"owner {owner!r} is reserved; choose another name")
    _authorize(store, owner, key, parent_id)
    check_queue_room(store, owner, 1)
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
                            experiment=experiment, sweep=sweep)


def cancel_sweep(store: Store, sweep: str, owner: str | None = None,
                 key: str | None = None) -> tuple[int, int]:
    """Cancel every queued run of a sweep and ask its running ones to stop; returns (runs
    cancelled, runs asked to stop). Given `owner`/`key` (the web app), only that owner's runs
    of it, and only with the owner's key; StoreError when the sweep has no runs."""
    if key is not None or owner is not None:
        _authorize(store, owner, key or "")
    if not store.count(sweep=check_sweep_id(sweep), owner=owner):
        raise StoreError(f"no sweep {sweep} in {store.path}")
    return store.cancel_sweep(sweep, owner)


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


def audit_key(source_id: str, settings) -> str:
    """The share key of a run's audit job with these settings (one job per run and settings)."""
    return f"audit:{source_id}:{settings.relearn_samples}:{settings.relearn_steps}"


def submit_audit(store: Store, source_id: str, owner: str, settings=None) -> str:
    """Queue the audit of a finished run (`dimalign.audit`), or return the one already queued,
    running, or done whose file is still there. Settings its forget set cannot take raise
    ConfigError and queue nothing."""
    from dimalign.audit import AuditSettings, audit_path

    settings = settings or AuditSettings()
    source = store.get(source_id)
    if source.status != "done":
        raise StoreError(f"run {source_id} is {source.status}; the audit needs a finished run")
    settings.check(_forget_size(source))
    done = ("done",) if audit_path(source.folder, settings).exists() else ()
    return store.find_or_create_run(
        share_key=audit_key(source_id, settings), reuse=(*ACTIVE, *done), owner=owner,
        kind="audit", preset=source.preset, method="audit",
        config={"source": source_id, "settings": dataclasses.asdict(settings)},
        parent_id=source_id, experiment=source.experiment)


def _forget_size(source: Run) -> int:
    """The forget set's size, from the run's saved result (checked: a damaged one is one
    line, and is set aside)."""
    from dimalign.checked import DamagedFile
    from dimalign.runner import load_result

    try:
        return int(load_result(source.folder)["data"]["forget"])
    except (FileNotFoundError, DamagedFile) as err:
        raise StoreError(f"run {source.id} has no readable result to audit ({err})") from None


def worker_gone(run: Run, heartbeat_timeout: float | None = None) -> bool:
    """Whether a running run's worker is gone: its process is dead or, with
    `heartbeat_timeout`, it has not beaten for that long."""
    if not pid_alive(run.pid):
        return True
    return heartbeat_timeout is not None and (
        run.heartbeat is None or time.time() - run.heartbeat > heartbeat_timeout)


def mark_interrupted(store: Store, run: Run, error: str = WORKER_STOPPED) -> bool:
    """A running run whose worker is gone becomes `interrupted` (resumable)."""
    return store.transition(run.id, ("running",), status="interrupted", pid=None, error=error)


def cancel(store: Store, run_id: str, owner: str | None = None, key: str | None = None) -> Run:
    """Cancel a queued run at once, or ask a running one's worker to stop; a running run whose
    worker is already dead (its scheduler killed with it) is cancelled here. Given an `owner`
    or a `key` (the web app passes both), only the holder of the run's owner's key may; given
    neither, the machine's own user (the CLI) may cancel any run."""
    _authorize(store, owner, "" if key is None and owner is not None else key, run_id)
    run = store.get(run_id)
    if run.status == "running" and worker_gone(run):
        store.transition(run_id, ("running",), status="cancelled", pid=None,
                         finished=time.time(), error="cancelled; its worker had stopped (resume "
                                                     "continues from its last checkpoint)")
        return store.get(run_id)
    return store.request_cancel(run_id)


def resume(store: Store, run_id: str, owner: str | None = None, key: str | None = None) -> Run:
    """Queue an interrupted, failed or cancelled run again; it continues from its last
    checkpoint and keeps the metrics it already wrote. A `running` run whose worker is dead
    (no scheduler has noticed yet) is marked interrupted first. `owner`, `key`: as for
    `cancel`."""
    _authorize(store, owner, "" if key is None and owner is not None else key, run_id)
    run = store.get(run_id)
    if run.status == "running" and worker_gone(run) and mark_interrupted(store, run):
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


def _env_number(name: str, kind: type, default, low: float | None = None):
    """An environment setting of the scheduler as a number; ConfigError (one line, naming the
    variable) when it is not one or lies below `low`. Checked in the foreground, by
    `check_worker_settings`, before a background scheduler would fail on it unseen."""
    text = os.environ.get(name)
    if text is None:
        return default
    word = "a whole number" if kind is int else "a number"
    try:
        value = kind(text.strip())
    except ValueError:
        value = None
    if value is None or value != value or (low is not None and value < low):
        bound = f" of at least {low:g}" if low is not None else ""
        raise ConfigError(name, f"must be {word}{bound}, got {text!r}")
    return value


def worker_count(gpus: int = 0) -> int:
    """Worker processes (slots): DIMALIGN_WORKERS, else one per GPU, else one."""
    return _env_number("DIMALIGN_WORKERS", int, gpus or 1, low=1)


BACKENDS = ("local", "ray")


def backend(name: str | None = None) -> str:
    """Where jobs run: `name` (the scheduler's --backend), else DIMALIGN_BACKEND, else local
    (this machine's worker processes); `ray`: tasks on a Ray cluster (`dimalign.ray_backend`)."""
    source = "--backend" if name is not None else "DIMALIGN_BACKEND"
    value = (name if name is not None else os.environ.get("DIMALIGN_BACKEND") or "local")
    if value.strip().lower() not in BACKENDS:
        raise ConfigError(source, f"must be one of {', '.join(BACKENDS)}, got {value!r}")
    return value.strip().lower()


def check_worker_settings() -> None:
    """Raise ConfigError for a scheduler setting a background scheduler could not start with
    (DIMALIGN_WORKERS below 1 or not a number, ...): said here, in the foreground."""
    worker_count()
    queue_cap()
    recycle_limits()
    worker_threads(1)
    if backend() == "ray":
        from dimalign.ray_backend import job_resources

        job_resources()


def default_slots() -> list[Slot]:
    """One job per GPU, or one on the CPU; DIMALIGN_WORKERS overrides the count."""
    import torch

    gpus = torch.cuda.device_count()
    return [Slot(i % gpus if gpus else None) for i in range(worker_count(gpus))]


def recycle_limits() -> tuple[int, float]:
    """(jobs, MiB of resident memory) after which a worker is replaced by a fresh one."""
    return (_env_number("DIMALIGN_WORKER_JOBS", int, 200),
            _env_number("DIMALIGN_WORKER_MEMORY_MB", float, 8192.0))


def worker_threads(workers: int) -> int:
    """torch threads per worker: half the cores, shared by the workers. The other half stays
    with the web server and the pages; on 2 cores a second busy torch thread spins in
    barriers against them and slowed small runs several-fold. DIMALIGN_WORKER_THREADS sets it."""
    if "DIMALIGN_WORKER_THREADS" in os.environ:
        return max(1, _env_number("DIMALIGN_WORKER_THREADS", int, 1))
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

    def handed(self) -> set[str]:
        """The runs handed to this scheduler's workers that have not ended yet."""
        return {s.run_id for s in self.slots if s.run_id is not None}

    def capacity(self) -> int:
        """How many jobs may run at once."""
        return len(self.slots)

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
        """Running runs whose worker is gone (killed, crashed, machine restarted, or died with
        an earlier scheduler) become interrupted; runs whose ending this scheduler still has to
        record are its own."""
        ours = self.handed() | set(self.endings)
        for run in self.store.runs(statuses=("running",)):
            if run.id not in ours and worker_gone(run, self.heartbeat_timeout):
                mark_interrupted(self.store, run)

    def held_slots(self) -> set[int]:
        """Slots (indices) held by orphans: local runs still running in a worker that is not
        ours — an earlier scheduler's, killed without it. Such a worker finishes its job and
        leaves; until then its slot takes no job, so no slot (no GPU) runs two at once. An
        orphan holds the slot of its GPU (the run's device, `cuda:N`), else any slot, idle
        ones first. Call after `recover`: the runs left running have live workers."""
        ours = self.handed() | set(self.endings)
        orphans = [r for r in self.store.runs(statuses=("running",), executor="local")
                   if r.id not in ours]
        held: set[int] = set()
        for run in orphans:
            gpu = _gpu_of(run.device)
            order = sorted(range(len(self.slots)), key=lambda i: (
                self.slots[i].gpu != gpu, self.slots[i].run_id is not None, i))
            left = [i for i in order if i not in held]
            if left:
                held.add(left[0])
        return held

    def fail_orphans(self) -> None:
        for run, dep in self.store.blocked_by_failure():  # one query, however long the queue
            self.store.transition(run.id, ("queued",), status="failed", finished=time.time(),
                                  error=f"its baselines job {dep.id} {dep.status}: "
                                        f"{dep.error or ''}".strip())

    def next_runs(self, free: int) -> list[Run]:
        """Fair order: owners with fewer running jobs first, then round robin (the owner whose
        last job started longest ago, or never), FIFO within an owner. A run handed to a
        worker that has not claimed it yet counts as running. Chosen from the oldest `free`
        ready runs of every owner (`Store.ready_heads`), so one owner's thousands of queued
        runs never hide another's: a newcomer starts at the next free slot."""
        handed = self.handed()
        busy: dict[str, int] = {}
        owners = {r.id: r.owner for r in self.store.runs(statuses=("running",), limit=None)}
        owners.update({i: self.store.get(i).owner for i in handed if i not in owners})
        for owner in owners.values():
            busy[owner] = busy.get(owner, 0) + 1
        ready = self.store.ready_heads("local", free, skip=handed)
        served = self.store.last_started({r.owner for r in ready})
        picked: list[Run] = []
        while ready and len(picked) < free:
            owners = {r.owner for r in ready if busy.get(r.owner, 0) < self.cap(r.owner)}
            if not owners:
                break
            owner = min(owners, key=lambda o: (busy.get(o, 0), served.get(o, -1.0),
                                               next(r.created for r in ready if r.owner == o)))
            run = next(r for r in ready if r.owner == owner)
            ready.remove(run)
            picked.append(run)
            busy[owner] = busy.get(owner, 0) + 1
            served[owner] = time.time()  # served now: the next pick of this tick is another's
        return picked

    def cap(self, owner: str) -> int:
        return self.capacity() if owner == SHARED_OWNER else self.per_owner

    def start_eligible(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None and now >= slot.retry_at:
                self.spawn(slot)
        free = [i for i, s in enumerate(self.slots)
                if s.ready and s.run_id is None and now >= s.retry_at]
        if not free:
            return
        held = self.held_slots()
        free = [self.slots[i] for i in free if i not in held]
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


def _gpu_of(device: str | None) -> int | None:
    """The GPU index in a run's device (`cuda:N`, as a worker of a GPU slot records it)."""
    if device and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


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


def serve_forever(idle_exit: float | None = 600.0, backend_name: str | None = None,
                  address: str | None = None) -> int:
    """Run the scheduler here if no other holds this home's lock. Returns 0, or 1 if taken.
    `backend_name`, `address`: see `backend` and `ray_backend.RayScheduler`."""
    check_worker_settings()
    use = backend(backend_name)
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
        if use == "ray":
            from dimalign.ray_backend import RayScheduler

            scheduler = RayScheduler(store, address=address)
        else:
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


STARTUP_SECONDS = 60.0  # how long a scheduler just started may take to take its lock
# home -> (the scheduler this process started there, when), until it is seen holding the lock
_starting: dict[str, tuple[subprocess.Popen, float]] = {}
_start_lock = threading.Lock()  # the app's sessions are threads of one process


def ensure_scheduler() -> subprocess.Popen | None:
    """Start a background scheduler for this home unless one is running; returns the process
    it started, if any. Cheap enough to call often (a lock-file check): a scheduler stops after
    ten idle minutes, or may have been killed. One this process started that is still
    importing (it takes the lock a few seconds after its start) is not started twice.
    A scheduler setting it could not start with raises ConfigError here."""
    check_worker_settings()
    home = str(paths.home())
    with _start_lock:
        if scheduler_running():
            _starting.pop(home, None)  # it is up: from now on the lock alone tells
            return None
        if home in _starting:
            process, since = _starting[home]
            if process.poll() is None and time.monotonic() - since < STARTUP_SECONDS:
                return None  # starting up: it takes the lock in a moment
        paths.home().mkdir(parents=True, exist_ok=True)
        with open(paths.home() / "scheduler.log", "a") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, "-m", "dimalign", "scheduler"], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
        _starting[home] = (process, time.monotonic())
        return process
