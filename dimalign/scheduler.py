"""The scheduler: a pool of warm worker processes kept busy with bounded concurrency and
fairness between owners, and recovery of dead workers. One scheduler serves a $DIMALIGN_HOME
(`dimalign.daemon` runs it in the background and holds its lock). The Ray backend's scheduler
(`dimalign.ray_backend`) is this one with Ray tasks for slots. A worker that outlived its
scheduler finishes its job and leaves, and holds its slot until then.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from dimalign import paths
from dimalign.checked import DiskFull
from dimalign.settings import env_number
from dimalign.store import SHARED_OWNER, Run, Store, pid_alive

HEARTBEAT_TIMEOUT = 15.0  # seconds without a heartbeat before a running worker counts as dead
WORKER_STOPPED = ("its worker stopped (killed, crashed or the machine restarted); resume it to "
                  "continue from its last checkpoint")


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


def _say(line: str) -> None:
    """One line on the scheduler's stderr, if even that can be written."""
    with contextlib.suppress(OSError, ValueError):
        print(f"dimalign scheduler: {line}", file=sys.stderr, flush=True)


def worker_count(gpus: int = 0) -> int:
    """Worker processes (slots): DIMALIGN_WORKERS, else one per GPU, else one."""
    return env_number("DIMALIGN_WORKERS", int, gpus or 1, low=1)


def default_slots() -> list[Slot]:
    """One job per GPU, or one on the CPU; DIMALIGN_WORKERS overrides the count."""
    import torch

    gpus = torch.cuda.device_count()
    return [Slot(i % gpus if gpus else None) for i in range(worker_count(gpus))]


def recycle_limits() -> tuple[int, float]:
    """(jobs, MiB of resident memory) after which a worker is replaced by a fresh one."""
    return (env_number("DIMALIGN_WORKER_JOBS", int, 200),
            env_number("DIMALIGN_WORKER_MEMORY_MB", float, 8192.0))


def worker_threads(workers: int) -> int:
    """torch threads per worker: half the cores, shared by the workers. The other half stays
    with the web server and the pages; on 2 cores a second busy torch thread spins in
    barriers against them and slowed small runs several-fold. DIMALIGN_WORKER_THREADS sets it."""
    if "DIMALIGN_WORKER_THREADS" in os.environ:
        return max(1, env_number("DIMALIGN_WORKER_THREADS", int, 1))
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
        from dimalign.run_jobs import queue_then

        for run_id, ending in list(self.endings.items()):
            self.store.transition(run_id, ("running",), **ending)
            del self.endings[run_id]
            queue_then(self.store, run_id, _say)

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
        ready = self.store.ready_heads(free, skip=handed)
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
            self.store.runs(statuses=("queued",), limit=1))

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
