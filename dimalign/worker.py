"""Worker processes: long-lived, one job at a time. Never imports streamlit.

Started by the scheduler with the spawn start method, a worker imports torch once and keeps
recent experiments in memory, then takes run ids from its pipe. For each it claims the run in
the store (so no two workers run the same job), beats a heartbeat, watches for a cancel
request, streams progress and telemetry into the store, checkpoints after every epoch, and
records how the run ended. A worker killed outright leaves a stale heartbeat: the scheduler
marks the run `interrupted`, and `resume` continues it from its last checkpoint (or from step
0, saying so, when that checkpoint is damaged). A worker whose scheduler died (killed outright)
finishes the job it has and leaves: it never takes another, so the scheduler that replaces the
dead one does not find two jobs in one slot. When the disk is full and the store cannot record
how a job ended, the worker hands the ending to the scheduler, which records it later.

What a job is and how it runs, whoever runs it, is `dimalign.job`: a worker builds the `Job`
from the store and runs it with `store_hooks`, which write the store.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

from dimalign.job import CANCEL_POLL_SECONDS, ending_of

HEARTBEAT_SECONDS = 1.0


class _Heartbeat(threading.Thread):
    """Beats every second on its own connection; turns a cancel request into an event."""

    def __init__(self, run_id: str):
        super().__init__(daemon=True)
        self.run_id, self.cancel, self.done = run_id, threading.Event(), threading.Event()

    def run(self) -> None:
        from dimalign.checked import DiskFull
        from dimalign.store import Store

        store = Store()
        last = time.monotonic()
        while not self.done.wait(CANCEL_POLL_SECONDS):
            if time.monotonic() - last >= HEARTBEAT_SECONDS:
                with contextlib.suppress(DiskFull):  # a full disk misses beats; the job says
                    store.update(self.run_id, heartbeat=time.time())
                last = time.monotonic()
            if store.get(self.run_id).cancel_requested:
                self.cancel.set()
        store.close()


def resident_mb() -> float:
    """This process's resident memory now (Linux), else its peak (elsewhere), in MiB."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def serve(home: str, gpu: int | None, conn, max_jobs: int, max_memory_mb: float,
          threads: int = 1) -> None:
    """Process entry point (spawned by the scheduler): import once, then run the jobs the
    scheduler hands over until it says stop, goes away, or this worker has done `max_jobs`
    or grown past `max_memory_mb` (the scheduler then starts a fresh one)."""
    scheduler = os.getppid()  # the process that started this one; it changes if that dies
    os.environ["DIMALIGN_HOME"] = home
    if gpu is not None:  # before torch is imported, so the jobs see only their GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    import torch

    torch.set_num_threads(threads)
    import dimalign.metrics  # noqa: F401 - the imports every job needs, paid once
    import dimalign.runner  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # imports torch._dynamo (~2 s)
    _warm_latest_experiment()
    conn.send(("ready",))
    jobs = 0
    while True:
        try:
            run_id = conn.recv()
        except (EOFError, OSError):  # the scheduler is gone
            return
        if run_id is None or os.getppid() != scheduler:  # told to stop, or orphaned
            return
        unrecorded = work(home, run_id, gpu)
        jobs += 1
        if os.getppid() != scheduler:  # the scheduler died during the job: take no other
            return
        leaving = jobs >= max_jobs or resident_mb() > max_memory_mb
        try:
            conn.send(("idle", leaving, unrecorded))
        except OSError:
            return
        if leaving:
            return


def _warm_latest_experiment() -> None:
    """Load and evaluate the baselines of this home's latest experiment (if cached) before
    the first job, so the first click of a session is as fast as the ones after it."""
    try:
        from dimalign.artifacts import geometry_bundle
        from dimalign.config import config_from_dict
        from dimalign.data import normalise
        from dimalign.kinds import REGISTRY
        from dimalign.metrics import evaluate
        from dimalign.store import Store
        from dimalign.train import baselines_cached, get_baselines, warm_up

        store = Store()
        # the newest run of an experiment (jobs on a source run, e.g. a film's frames queued
        # after each run, have settings of their own instead)
        latest = sorted((r for kind, spec in REGISTRY.items() if spec.experiment
                         for r in store.runs(kind=kind, limit=1)),
                        key=lambda r: r.created, reverse=True)
        store.close()
        if not latest:
            return
        cfg = config_from_dict(latest[0].config)
        if not baselines_cached(cfg):
            return
        b = get_baselines(cfg)
        ids = b.checkpoints
        _, outs = evaluate({"original": b.original, "retrained": b.retrained}, b.experiment,
                           cfg.eval, cfg.seed, ids=ids)
        geometry_bundle(outs, b.experiment, cfg.eval, cfg.seed, ids=ids)
        warm_up(b.original, normalise(b.experiment.x_train[:2].to(b.device), b.experiment.info))
    except Exception:  # noqa: BLE001 - warming is an optimisation; the job reports real errors
        return


def work(home: str, run_id: str, gpu: int | None = None) -> dict | None:
    """Run one job to its end (in a worker process). Returns None when its ending is in the
    store; else the disk was full, and it returns the ending (status, error, ...) for the
    scheduler to record later, or status "queued" when the job could not even start."""
    os.environ["DIMALIGN_HOME"] = home
    if gpu is not None:  # before torch is imported, so the job sees only its GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    from dimalign.checked import DiskFull
    from dimalign.run_jobs import queue_then
    from dimalign.store import Store

    store = None
    try:
        store = Store()
        claimed = store.claim(run_id, "local", pid=os.getpid())
    except DiskFull as err:  # it stays queued; the scheduler hands it out again later
        if store is not None:
            store.close()
        _note(f"run {run_id} not started: {err}")
        return {"status": "queued", "error": str(err)}
    if not claimed:
        store.close()
        return None
    beat = _Heartbeat(run_id)
    beat.start()
    try:
        ending, interrupt = ending_of(lambda: _execute(store, store.get(run_id), beat.cancel,
                                                       gpu))
    finally:
        beat.done.set()
        beat.join(timeout=5)
    try:
        store.transition(run_id, ("running",), **ending)
    except DiskFull as err:
        _note(f"run {run_id} ended {ending['status']}"
              + (f" ({ending['error']})" if ending.get("error") else "")
              + f", but the store could not record it: {err}")
        return ending
    else:
        queue_then(store, run_id, _note)
    finally:
        store.close()
        if interrupt is not None:
            raise interrupt
    return None


def _note(line: str) -> None:
    """One line on this worker's stderr (the scheduler's log), if even that can be written."""
    with contextlib.suppress(OSError, ValueError):
        print(f"dimalign worker: {line}", file=sys.stderr, flush=True)


def warm_umap(home: str) -> None:
    """Process entry point (spawned by the scheduler once per NUMBA_CACHE_DIR): compile UMAP's
    kernels at low priority while the user trains, so their first manifold is not a minute
    of numba compilation."""
    os.environ["DIMALIGN_HOME"] = home
    os.nice(10)
    from dimalign.embed import warm_up

    warm_up()


def _execute(store, run, cancel: threading.Event, gpu: int | None = None) -> dict | None:
    """One stored run in this process, reporting straight into the store."""
    from dimalign.job import run_job, store_hooks, store_job

    hooks = store_hooks(store, run.id, cancelled=cancel.is_set, note=_note, gpu=gpu)
    return run_job(store_job(store, run), hooks)
