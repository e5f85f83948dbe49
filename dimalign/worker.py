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

`run_job` is a job itself, whoever runs it: given a `Job` (what the store says about the run)
and `Hooks` (where progress, telemetry, notes and files go), it runs the job in a folder. A
local worker's hooks write the store; the Ray backend's post to its scheduler on the head.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HEARTBEAT_SECONDS = 1.0
CHECKPOINT = "checkpoint.pt"


CANCEL_POLL_SECONDS = 0.2  # a cancel request stops the run within this and one step


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
        from dimalign.jobs import baselines_cached
        from dimalign.metrics import evaluate
        from dimalign.store import Store
        from dimalign.train import get_baselines, warm_up

        store = Store()
        latest = store.runs(limit=1)
        store.close()
        if not latest or latest[0].kind == "embed":
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
    from dimalign.store import Store

    store = None
    try:
        store = Store()
        now = time.time()
        claimed = store.transition(run_id, ("queued",), status="running", pid=os.getpid(),
                                   started=now, heartbeat=now, error=None, finished=None,
                                   cancel_requested=0)
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


def _summary(result: dict) -> dict:
    import json

    return json.loads(json.dumps({k: result[k] for k in ("models", "seconds", "device", "params",
                                                          "samples") if k in result}))


def ending_of(job: Callable[[], dict | None]) -> tuple[dict, BaseException | None]:
    """Run `job` and say how it ended: the fields of its final store update, and the
    KeyboardInterrupt or SystemExit to raise again once that is recorded (else None)."""
    try:
        result = job()
        return dict(status="done", finished=time.time(), progress=1.0,
                    result=_summary(result) if result else None), None
    except BaseException as err:  # noqa: BLE001 - every ending is recorded, then re-raised
        from dimalign.methods.loop import Cancelled

        status = "cancelled" if isinstance(err, Cancelled) else "failed"
        message = str(err) if isinstance(err, Cancelled | ValueError | RuntimeError) else \
            "".join(traceback.format_exception_only(err)).strip()
        ending = dict(status=status, finished=time.time(), error=message or type(err).__name__)
        return ending, None if isinstance(err, Exception) else err


class Throttle:
    """Passes progress on at most 4 times a second (and always at the end)."""

    def __init__(self, write: Callable[[float, str], None]):
        self.write, self.last = write, 0.0

    def __call__(self, p) -> None:
        self.at(p.fraction, p.phase)

    def at(self, fraction: float, phase: str) -> None:
        now = time.monotonic()
        if now - self.last >= 0.25 or fraction >= 1.0:
            self.last = now
            self.write(fraction, phase)


@dataclass
class RunRef:
    """Another run a job reads from: a fork's parent, or the run an embedding is made of."""

    id: str
    folder: Path
    status: str


@dataclass
class Job:
    """What running one job needs to know, whoever runs it: a local worker reads it from the
    store, the Ray backend ships it with the task (folders then lie in the node's own home)."""

    id: str
    kind: str  # 'baselines', 'unlearn', 'embed' or 'audit'
    method: str
    preset: str
    config: dict
    folder: Path
    parent: RunRef | None = None  # a fork starts from its weights; an embedding reads it
    already: int = -1  # the last step whose metrics the store has (they are not sent again)
    points: list[dict] = field(default_factory=list)  # the telemetry points the store has


@dataclass
class Hooks:
    """Where a running job reports: straight into the store (a local worker), or to the
    scheduler on the Ray head, which writes the store (`dimalign.ray_backend`)."""

    device: Callable[[str], None]  # the device it runs on
    progress: Callable[[float, str], None]  # fraction and phase, a few times a second
    say: Callable[[str], None]  # what it is doing now
    telemetry: Callable[[int, dict], None]  # a step's numbers (steps after `already` only)
    artifact: Callable[[str, str, Path], None]  # (run id, name, path): a file it has written
    cancelled: Callable[[], bool]  # polled between steps


def store_job(store, run) -> Job:
    """A stored run as a job for this machine."""
    parent = None
    if run.parent_id:
        p = store.get(run.parent_id)
        parent = RunRef(p.id, p.folder, p.status)
    already = store.last_step(run.id) if run.kind == "unlearn" else -1
    points = _points_before(store, run.id, already) if already >= 0 else []
    return Job(run.id, run.kind, run.method, run.preset, run.config, run.folder, parent,
               already, points)


def _execute(store, run, cancel: threading.Event, gpu: int | None = None) -> dict | None:
    """One stored run in this process, reporting straight into the store."""

    def device(name: str) -> None:
        # a GPU slot's job names its GPU: should this worker's scheduler die, the one that
        # replaces it keeps that GPU's slot free until the job ends
        store.update(run.id, device=f"cuda:{gpu}" if gpu is not None and name.startswith(
            "cuda") else name)

    def say(text: str) -> None:  # what the run is doing; notes also go to the log
        store.update(run.id, phase=text.rstrip(" ."))
        if not text.endswith("..."):
            _note(f"run {run.id}: {text}")

    hooks = Hooks(
        device=device,
        progress=lambda fraction, phase: store.update(run.id, progress=fraction, phase=phase),
        say=say,
        telemetry=lambda step, values: store.log_metrics(run.id, step, values),
        artifact=store.add_artifact,
        cancelled=cancel.is_set)
    return run_job(store_job(store, run), hooks)


def run_job(job: Job, hooks: Hooks) -> dict | None:
    """Run one job (baselines, unlearning, an embedding or an audit) to its end: the one code
    path of both backends. Files go into the job's folder; each is handed to
    `hooks.artifact`."""
    from dimalign import checked
    from dimalign.config import config_from_dict
    from dimalign.runner import run_experiment
    from dimalign.train import model_from_state, pick_device

    if job.kind == "embed":
        return _embed(job, hooks)
    if job.kind == "audit":
        return _audit(job, hooks)
    cfg = config_from_dict(job.config)
    device = pick_device(cfg.device)
    hooks.device(str(device))
    progress = Throttle(hooks.progress)

    if job.kind == "baselines":  # train (or load) and evaluate: pages read its metrics
        _mkdir(job.folder)
        result = run_experiment(cfg, "retrain", preset=job.preset, progress=progress,
                                run_dir=job.folder, say=hooks.say)
        _index(job, hooks)
        return result

    _mkdir(job.folder)
    ckpt_path = job.folder / CHECKPOINT
    resume = _resume_state(ckpt_path, hooks.say)
    # the points sent up to the checkpoint; the resumed run sends the later ones again
    earlier = [] if resume is None else [p for p in job.points if p["step"] <= resume["step"]]

    def telemetry(point: dict) -> None:
        if point["step"] > job.already:  # metrics written before a crash are kept, not redone
            hooks.telemetry(point["step"], {k: v for k, v in point.items()
                                            if isinstance(v, int | float) and k != "step"})

    def checkpoint(state: dict) -> None:
        checked.save_torch(state, ckpt_path)
        hooks.artifact(job.id, "checkpoint", ckpt_path)

    init = None
    if job.parent is not None:
        init = model_from_state(cfg, _parent_state(job.parent), device)
    result = run_experiment(cfg, job.method, preset=job.preset, progress=progress,
                            telemetry=telemetry, cancel=hooks.cancelled, run_dir=job.folder,
                            init=init, checkpoint=checkpoint, resume=resume,
                            earlier_points=earlier, say=hooks.say)
    _index(job, hooks)
    return result


def _mkdir(folder) -> None:
    from dimalign.checked import DiskFull, is_disk_full

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull(folder) from None
        raise


def _resume_state(path, say) -> dict | None:
    """The run's last checkpoint, if it has one. A damaged one is set aside and the run
    starts again from step 0 (the metrics it wrote before are kept), and says so."""
    from dimalign import checked

    try:
        return checked.load_torch(path)
    except FileNotFoundError:
        return None
    except checked.DamagedFile as err:
        say(f"its checkpoint was damaged ({err.reason}; {err.where}); starting again from "
            "step 0")
        return None


def _points_before(store, run_id: str, last: int) -> list[dict]:
    """The telemetry points a run sent up to step `last`, rebuilt from the store."""
    by_step: dict[int, dict] = {}
    for key, curve in store.curves(run_id).items():
        for step, value in curve:
            if step > last:
                continue
            point = by_step.setdefault(step, {"step": step})
            point[key] = value
            if key.startswith("phase_"):
                point["phase"] = key.removeprefix("phase_")
    return [by_step[s] for s in sorted(by_step)]


RESULT_FILES = ("result.json", "geometry.pt", "telemetry.json", "unlearned.pt")


def _index(job: Job, hooks: Hooks) -> None:
    for name in RESULT_FILES:
        if (job.folder / name).exists():
            hooks.artifact(job.id, name.split(".")[0], job.folder / name)


def _embed(job: Job, hooks: Hooks) -> dict:
    """UMAP of a finished run's saved features, in one aligned frame, saved beside them."""
    from dimalign.embed import embed_saved_run

    samples = int(job.config["samples"])
    hooks.progress(0.0, "umap")
    path, _ = embed_saved_run(job.parent.folder, samples)
    hooks.artifact(job.parent.id, f"embedding-{samples}", path)
    return {"models": {}, "seconds": {}, "device": "cpu"}


def _audit(job: Job, hooks: Hooks) -> dict:
    """The audit of a finished run (layers, membership, relearn attack, classes), saved
    beside it."""
    from dimalign.audit import AuditSettings, audit_saved_run

    settings = AuditSettings(**job.config["settings"])
    progress = Throttle(hooks.progress)
    path, bundle = audit_saved_run(job.parent.folder, settings, progress.at)
    hooks.artifact(job.parent.id, path.stem, path)
    return {"models": {}, "seconds": {"audit": bundle["seconds"]}, "device": bundle["device"]}


def _parent_state(parent: RunRef) -> dict:
    """A fork starts from the parent's final weights, or its last checkpoint if unfinished.
    Either is checked: a damaged one fails the fork with one line (and is set aside)."""
    from dimalign import checked

    for name, pick in (("unlearned.pt", lambda state: state),
                       (CHECKPOINT, lambda state: state["model"])):
        path = parent.folder / name
        try:
            return pick(checked.load_torch(path))
        except FileNotFoundError:
            continue
        except checked.DamagedFile as err:
            raise RuntimeError(f"cannot fork run {parent.id}: {err}") from None
    if parent.status == "done":
        raise RuntimeError(f"cannot fork run {parent.id}: its weights are gone (unlearned.pt "
                           f"is missing from {parent.folder}); fork another run")
    raise RuntimeError(f"run {parent.id} has no checkpoint to fork from yet; wait for its "
                       "first epoch to finish")
