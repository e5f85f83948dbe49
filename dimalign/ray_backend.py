"""The Ray job backend: every job a Ray task on any node of a cluster; the store stays here.

`dimalign scheduler --backend ray` (or DIMALIGN_BACKEND=ray, which `make app` and every
command that starts a scheduler pass on) runs this scheduler on the head node. It queues,
orders and records runs as the local one does, but hands each job to Ray as a task asking for
DIMALIGN_RAY_CPUS CPUs and DIMALIGN_RAY_GPUS GPUs (a fraction shares one). The task runs
`worker.run_job`, the local worker's own code path, with hooks that post to a `Mailbox` actor
pinned to the head node: progress, telemetry, notes, and every file the job writes (its
checkpoint after each epoch, then result.json, geometry, telemetry, weights; models a
baselines job trains) as bytes. The scheduler takes the mail every tick and writes it: the
store through its one connection, the files into the run's folder here through `checked`. A
remote node never opens the store and needs no shared file system.

What a job needs travels with it through Ray's object store: the cached baselines (put once
per file), the run's last checkpoint (a resumed run), a fork's parent weights, an embedding's
features. The data are rebuilt on the node, deterministically: digits ship inside
scikit-learn; torchvision datasets download into the node's home, or come from the node's
DIMALIGN_RAY_DATA; an ImageFolder tree and an `original_checkpoint` file must lie at the same
path on the nodes. A node's home is DIMALIGN_RAY_SCRATCH/<node id> (default: the system's
temporary folder).

Cancel sets a flag the job polls between steps, and `ray.cancel`s a task that has not ended
a few seconds later. A task whose node or worker died leaves its run `interrupted`: `resume`
continues from the last checkpoint that came back. A run whose job asks for more CPUs or GPUs
than any node of the cluster has stays queued for DIMALIGN_RAY_WAIT_SECONDS (120: a node that
fits may be starting), then fails naming the setting, instead of waiting for a node forever.
Stopping the scheduler waits for the jobs that have begun on a node, and leaves those still
waiting for one `interrupted` at once.

A HOST:PORT address is tried in a child process first: where something answers but no Ray
cluster does within DIMALIGN_RAY_CONNECT_SECONDS (20), that is one line, and Ray's retries and
warnings stay in the child.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from dimalign import checked, paths
from dimalign.errors import ConfigError
from dimalign.job import (
    CANCEL_POLL_SECONDS,
    Hooks,
    Job,
    RunRef,
    ending_of,
    run_job,
    store_hooks,
    store_job,
)
from dimalign.kinds import get_kind
from dimalign.memo import LRU
from dimalign.run_files import CHECKPOINT
from dimalign.scheduler import Scheduler, worker_count
from dimalign.settings import env_number
from dimalign.store import Run, Store, StoreError

CANCEL_GRACE = 5.0  # seconds a cancelled job has to stop by itself before ray.cancel
RESOURCES_EVERY = 5.0  # seconds between looks at the cluster's size
NOT_BEGUN_GRACE = 5.0  # s a stopping scheduler gives a job with no mail yet to say it has begun
STOPPED = "its scheduler stopped; resume it to continue from its last checkpoint that came back"
LOST = ("its Ray node or worker was lost ({}); resume it to continue from its last "
        "checkpoint that came back")


def job_resources() -> tuple[float, float | None]:
    """(CPUs, GPUs) each job asks Ray for: DIMALIGN_RAY_CPUS (1) and DIMALIGN_RAY_GPUS (None:
    1 when the cluster has GPUs, else 0; a fraction below 1 shares a GPU, above 1 it must be
    whole)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError("DIMALIGN_BACKEND", "ray needs Ray installed: pip install -e '.[ray]'")
    cpus = env_number("DIMALIGN_RAY_CPUS", float, 1.0, low=0)
    gpus = env_number("DIMALIGN_RAY_GPUS", float, None, low=0)
    if gpus is not None and gpus > 1 and gpus != int(gpus):
        raise ConfigError("DIMALIGN_RAY_GPUS", f"must be at most 1 or a whole number, got {gpus:g}")
    if cpus == 0 and not gpus:
        raise ConfigError("DIMALIGN_RAY_CPUS", "may be 0 only when DIMALIGN_RAY_GPUS is above 0")
    return cpus, gpus


# ---------------------------------------------------------------------------- the head's side


class Mailbox:
    """A Ray actor on the head node: what the running jobs post, until the scheduler takes it,
    and the jobs it asked to stop (by the token of one launch: a resumed run is a new job).
    Calls from one job arrive in the order it made them."""

    def __init__(self):
        self.mail: list[tuple] = []
        self.stop: set[str] = set()

    def post(self, run_id: str, kind: str, *payload) -> None:
        self.mail.append((run_id, kind, *payload))

    def take(self) -> list[tuple]:
        mail, self.mail = self.mail, []
        return mail

    def cancel(self, token: str) -> None:
        self.stop.add(token)

    def cancelled(self, token: str) -> bool:
        return token in self.stop

    def forget(self, token: str) -> None:
        self.stop.discard(token)


@dataclass
class Flight:
    """A job handed to Ray: its task, the inputs it holds in the object store, and when it
    was asked to stop."""

    ref: Any
    inputs: dict[str, Any]
    token: str  # this launch's, for its cancel flag
    cancel_sent: float | None = None
    forced: bool = False
    begun: bool = False  # its first mail came: it runs on a node, not waiting for one
    stopping: bool = False  # its scheduler stops: however it ends, it is left resumable


class RayScheduler(Scheduler):
    """The scheduler of the Ray backend: the local one's queue, fairness, recovery and store
    writes, with Ray tasks instead of worker processes. Runs as the Ray driver on the head:
    when it dies, Ray ends its tasks, and the next scheduler marks their runs interrupted."""

    def __init__(self, store: Store, address: str | None = None, per_owner: int = 1):
        super().__init__(store, slots=[], per_owner=per_owner)
        self.cpus, self.gpus_set = job_resources()
        self.gpus = self.gpus_set or 0.0
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        address = address or os.environ.get("DIMALIGN_RAY_ADDRESS") or None
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            check_reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as err:
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise RuntimeError(f"cannot start or reach {where}: {err}") from None
        here = ray.get_runtime_context().get_node_id()
        self.mailbox = ray.remote(Mailbox).options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        ).remote()
        self.task = ray.remote(remote_job)
        self.flight: dict[str, Flight] = {}
        self.mail: list[tuple] = []  # taken from the mailbox, not written yet (disk full)
        # cached model files in the object store, put once while the file stays the same
        self.shipped: LRU[Any] = LRU(8)
        self.cancel_grace = CANCEL_GRACE
        self.fits, self.fits_at = 1, -math.inf
        self.short: str | None = None  # why no node can take a job, when none can
        self.short_since = math.inf  # since when (monotonic) no node could
        self.wait_for_nodes = env_number("DIMALIGN_RAY_WAIT_SECONDS", float, 120.0, low=0)
        self.beat_at = 0.0

    # -- what the base scheduler asks

    def handed(self) -> set[str]:
        return set(self.flight)

    def capacity(self) -> int:
        """Jobs at once: DIMALIGN_WORKERS, else as many as the cluster's CPUs and GPUs fit
        (looked at every few seconds: nodes come and go). Notes in `short` when a job asks
        for more than any node has."""
        if time.monotonic() - self.fits_at > RESOURCES_EVERY:
            import ray

            total = ray.cluster_resources()
            if self.gpus_set is None:  # a GPU per job once the cluster has GPUs
                self.gpus = 1.0 if total.get("GPU", 0) >= 1 else 0.0
            fits = [math.floor(total.get("CPU", 0) / self.cpus + 1e-9)] if self.cpus else []
            if self.gpus:
                fits.append(math.floor(total.get("GPU", 0) / self.gpus + 1e-9))
            self.fits, self.fits_at = max(1, min(fits)), time.monotonic()
            self.short = _too_large({"CPU": (self.cpus, "DIMALIGN_RAY_CPUS"),
                                     "GPU": (self.gpus, "DIMALIGN_RAY_GPUS")})
            self.short_since = (math.inf if self.short is None
                                else min(self.short_since, time.monotonic()))
        return worker_count() if "DIMALIGN_WORKERS" in os.environ else self.fits

    def warm_umap(self) -> None:
        return None  # embeddings run on the nodes, which compile UMAP there

    def busy(self) -> bool:
        return bool(self.flight) or bool(self.mail) or bool(
            self.store.runs(statuses=("queued",), limit=1))

    # -- handing out jobs

    def start_eligible(self) -> None:
        free = self.capacity() - len(self.flight)
        if free > 0:
            for run in self.next_runs(free):
                self.launch(run)

    def launch(self, run: Run) -> None:
        now = time.time()
        if self.short and time.monotonic() - self.short_since < self.wait_for_nodes:
            return  # stays queued: a node that fits may be starting (an autoscaler, a restart)
        if self.short:  # it would wait for a node forever
            self.store.transition(run.id, ("queued",), status="failed", finished=now,
                                  error=self.short)
            return
        if not self.store.claim(run.id, "ray", pid=os.getpid(), phase="waiting for a Ray node"):
            return
        job = store_job(self.store, self.store.get(run.id))
        inputs = self.inputs(run, job)
        token = secrets.token_hex(8)
        spec = {"id": job.id, "token": token, "kind": job.kind, "method": job.method,
                "preset": job.preset, "config": job.config, "folder": _rel(job.folder),
                "already": job.already, "points": job.points, "cpus": self.cpus,
                "parent": None if job.parent is None else
                (job.parent.id, _rel(job.parent.folder), job.parent.status)}
        ref = self.task.options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0,
                                name=f"dimalign-{run.id}").remote(spec, inputs, self.mailbox)
        self.flight[run.id] = Flight(ref, inputs, token)

    def inputs(self, run: Run, job: Job) -> dict[str, Any]:
        """The files the job reads, by their path in the home, as object refs: the cached
        baselines of its config, its last checkpoint, its parent's weights or features."""
        import ray

        kind = get_kind(job.kind)  # what it reads: its registry entry says
        wanted: list[Path] = []
        if kind.source_baselines:  # e.g. the audited run's baselines
            wanted += self.model_files(self.source_config(job.parent.id))
        if kind.experiment:
            wanted += self.model_files(job.config)
        if kind.resumes:
            wanted.append(job.folder / CHECKPOINT)
        if job.parent is not None:
            wanted += [job.parent.folder / name for name in kind.parent_files]
        refs = {}
        for path in wanted:
            if not path.exists():
                continue
            rel = _rel(path)
            try:
                if path.parent == paths.models_dir():  # the same bytes for every job
                    refs[rel] = self.ship_model(path)
                else:
                    refs[rel] = ray.put(checked.load(path, bytes))
            except FileNotFoundError:
                continue
            except checked.DamagedFile as err:  # set aside: the job starts without it
                self.store.update(run.id, phase=f"{err}; the job goes on without it")
        return refs

    def source_config(self, parent_id: str) -> dict:
        """The config a finished run ran with, from the store (empty when the run is gone:
        the job then fails with the reason)."""
        try:
            return self.store.get(parent_id).config or {}
        except StoreError:
            return {}

    def model_files(self, config: dict) -> list[Path]:
        """The cached baselines of a config, weights and metadata (nothing when the config no
        longer builds: the job then fails with the reason)."""
        from dimalign.config import config_from_dict
        from dimalign.train import baseline_models, cache_key, cache_path

        try:
            cfg = config_from_dict(config)
            # and the models that decide a random forget set's strata (replicate 0's)
            files = [Path(cache_path(cache_key(c, role))) for c, role in baseline_models(cfg)]
        except Exception:  # noqa: BLE001 - the job reports the config's error itself
            return []
        return [f for path in files for f in (path, path.with_suffix(".json"))]

    def ship_model(self, path: Path):
        import ray

        st = path.stat()
        return self.shipped.get_or_make((str(path), st.st_ino, st.st_size, st.st_mtime_ns),
                                        lambda: ray.put(checked.load(path, bytes)))

    # -- what comes back

    def reap(self) -> None:
        """Take the mail, write it, and record how the jobs that ended did. Tasks are looked
        at before the mail is taken: a job posts everything before it returns, so an ended
        job's mail is all here before its ending is written."""
        if not self.flight and not self.mail:
            return
        import ray

        by_ref = {f.ref: run_id for run_id, f in self.flight.items()}
        ended, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0) if by_ref else \
            ([], [])
        if self.flight:
            self.mail += ray.get(self.mailbox.take.remote(), timeout=60)
        while self.mail:
            try:
                self.deliver(self.mail[0])
            except checked.DiskFull:
                raise  # kept, and written on a later tick
            except Exception as err:  # noqa: BLE001 - one bad letter must not stop the rest
                self.note(f"dropped what run {self.mail[0][0]} sent ({self.mail[0][1]}): {err}")
            self.mail.pop(0)
        for ref in ended:
            run_id = by_ref[ref]
            flight = self.flight.pop(run_id)
            self.endings[run_id] = recorded(flight, self.outcome(ref))
            self.mailbox.forget.remote(flight.token)
        self.record_endings()
        self.beat()
        self.stop_cancelled()

    def deliver(self, message: tuple) -> None:
        """Write one piece of mail: into the store, or a file into this home."""
        run_id, kind, *payload = message
        hooks = store_hooks(self.store, run_id, note=self.note)  # a local worker's, too
        if kind == "begun":
            if run_id in self.flight:
                self.flight[run_id].begun = True
        elif kind == "device":
            hooks.device(payload[0])
        elif kind == "progress":
            hooks.progress(payload[0], payload[1])
        elif kind == "say":
            hooks.say(payload[0])
        elif kind == "metrics":
            hooks.telemetry(payload[0], payload[1])
        elif kind == "file":  # (path in the home, bytes, (run id, name) to index or None)
            rel, data, index = payload
            path = _in_home(rel)
            checked.save(path, data)
            if index is not None:
                hooks.artifact(index[0], index[1], path)

    def note(self, line: str) -> None:
        import sys

        with contextlib.suppress(OSError, ValueError):
            print(f"dimalign ray: {line}", file=sys.stderr, flush=True)

    def outcome(self, ref) -> dict:
        """How a task ended, as the fields of its run's final update."""
        import ray
        from ray import exceptions as rx

        try:
            return ray.get(ref, timeout=60)
        except rx.TaskCancelledError:
            return dict(status="cancelled", finished=time.time(), error="cancelled")
        except rx.RayTaskError as err:  # raised in the task, outside what it catches itself
            return dict(status="failed", finished=time.time(),
                        error=str(err).strip().splitlines()[-1])
        except rx.RayError as err:  # the node died, the worker crashed, an object was lost
            return dict(status="interrupted", pid=None,
                        error=LOST.format(type(err).__name__))

    def beat(self) -> None:
        """The scheduler beats for its jobs: Ray tells it when one is lost."""
        if self.flight and time.monotonic() - self.beat_at >= 1.0:
            self.beat_at = time.monotonic()
            for run_id in self.flight:
                self.store.update(run_id, heartbeat=time.time())

    def stop_cancelled(self) -> None:
        """A cancel request raises the job's flag; a job still there a few seconds later is
        cancelled by Ray (forced ten seconds after that)."""
        import ray

        asked = {r.id for r in self.store.runs(statuses=("running",)) if r.cancel_requested}
        for run_id, flight in self.flight.items():
            if run_id not in asked:
                continue
            if flight.cancel_sent is None:
                flight.cancel_sent = time.monotonic()
                self.mailbox.cancel.remote(flight.token)
            elif not flight.forced and time.monotonic() - flight.cancel_sent > \
                    self.cancel_grace:
                flight.forced = time.monotonic() - flight.cancel_sent > 3 * self.cancel_grace
                ray.cancel(flight.ref, force=flight.forced)

    def close(self, timeout: float = 30.0) -> None:
        """Let the jobs that have begun on a node finish (their mail written) for up to
        `timeout` seconds. Those not known to have begun are asked to stop at once, by their
        flag: one that began after the last mail stops at its first look at it, tidying its
        node's folders (a cancel by Ray would kill it with this driver, leaving them); one
        still without mail after NOT_BEGUN_GRACE is waiting for a node (which may never come)
        and is dropped from Ray's queue. All of these, and those still running at the end, are
        left `interrupted` (resumable); so are all of them at once when the mail cannot be
        read (nothing more can be learned of them)."""
        import ray

        try:
            if not self.reap_for_close():  # the latest mail: which jobs have begun
                return
            for flight in self.flight.values():
                if not flight.begun:  # its flag: a job that starts now returns before any file
                    flight.stopping = True
                    self.mailbox.cancel.remote(flight.token)
            end = time.monotonic() + timeout
            dropped_at = time.monotonic() + min(NOT_BEGUN_GRACE, timeout)
            while self.flight and time.monotonic() < end and self.reap_for_close():
                if dropped_at is not None and time.monotonic() >= dropped_at:
                    # still no mail: waiting for a node. Out of Ray's queue. (Cancelled sooner,
                    # a job that had just begun was marked cancelled at once and killed with
                    # the driver before its `finally` tidied the node's folders.)
                    for flight in self.flight.values():
                        if flight.stopping and not flight.begun:
                            ray.cancel(flight.ref, force=False)
                            flight.cancel_sent = time.monotonic()
                    dropped_at = None
                time.sleep(0.2)
        finally:
            try:
                with contextlib.suppress(Exception):  # endings taken but not yet written
                    self.record_endings()
                self.interrupt(list(self.flight) + list(self.endings))
            finally:
                if self.started_ray:
                    ray.shutdown()

    def reap_for_close(self) -> bool:
        """`reap` while stopping; False when it fails (the jobs' mail lost with its actor or
        late, the store unwritable): the scheduler then stops without learning more. A full
        disk keeps the mail for later and goes on."""
        try:
            self.reap()
        except checked.DiskFull:
            pass
        except Exception as err:  # noqa: BLE001 - stopping must end with every run recorded
            self.note(f"stopping: {type(err).__name__}: {err}; the runs still in flight are "
                      "left interrupted")
            return False
        return True

    def interrupt(self, run_ids: list[str]) -> None:
        """Cancel these jobs (those still in flight) and leave their runs `interrupted`; a
        cancel or a write that fails does not keep the others from theirs."""
        import ray

        for run_id in run_ids:
            self.endings.pop(run_id, None)
            if (flight := self.flight.pop(run_id, None)) is not None:
                with contextlib.suppress(Exception):  # Ray itself may be gone
                    ray.cancel(flight.ref, force=True)
            with contextlib.suppress(checked.DiskFull, StoreError):
                self.store.transition(run_id, ("running",), status="interrupted", pid=None,
                                      error=STOPPED)


def recorded(flight: Flight, ending: dict) -> dict:
    """How a job's ending is recorded. Stopped with its scheduler, it is left interrupted
    (resumable), unless it failed of itself, not by a cancel from Ray: then its error is the
    run's. A job Ray cancelled that failed was cancelled all the same: Ray's cancel interrupts
    the task wherever it is, and torch can turn that into another error (a TypeError from
    inside C code)."""
    failed, by_ray = ending["status"] == "failed", flight.cancel_sent is not None
    if flight.stopping and ending["status"] != "done" and not (failed and not by_ray):
        return dict(status="interrupted", pid=None, error=STOPPED)
    if by_ray and failed:
        return dict(ending, status="cancelled", error="cancelled")
    return ending


def _too_large(asks: dict[str, tuple[float, str]]) -> str | None:
    """Why no job can start, in one line, when it asks for more of a resource ("CPU": (amount,
    the setting that asks)) than any live node has (a task runs on one node); else None."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    for unit, (asked, setting) in asks.items():
        most = max((node.get(unit, 0) for node in nodes), default=0)
        if asked > most + 1e-9:
            total = sum(node.get(unit, 0) for node in nodes)
            units = unit if asked == 1 else unit + "s"
            return (f"a job asks Ray for {asked:g} {units} ({setting}) but no node of the "
                    f"cluster has that many (at most {most:g}, {total:g} in all); lower "
                    f"{setting} or add a larger node")
    return None


# tries to join the cluster at argv[1]; prints why it could not, in one line
PROBE = """
import sys
import ray
try:
    ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False,
             configure_logging=False)
except Exception as err:
    print(type(err).__name__ + ": " + " ".join(str(err).split()))
    sys.exit(1)
ray.shutdown()
"""


def check_reachable(address: str | None) -> None:
    """A HOST:PORT where no Ray cluster answers is said in one line: at once when nothing
    answers, else within DIMALIGN_RAY_CONNECT_SECONDS, as a child process that joins the
    cluster finds out (Ray itself would keep trying for minutes, logging warnings all along).
    "auto", ray:// addresses and none are left to Ray."""
    import socket
    import subprocess
    import sys

    host, sep, port = (address or "").rpartition(":")
    if not sep or "/" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise RuntimeError(f"cannot reach the Ray cluster at {address} ({err.strerror or err}); "
                           "start it with `ray start --head` there, or check the address")\
            from None
    wait = env_number("DIMALIGN_RAY_CONNECT_SECONDS", float, 20.0, low=1)
    try:
        probe = subprocess.run([sys.executable, "-c", PROBE, address], capture_output=True,
                               text=True, timeout=wait, stdin=subprocess.DEVNULL,
                               env={"RAY_USAGE_STATS_ENABLED": "0", **os.environ})
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"cannot reach the Ray cluster at {address}: something answers there "
                           f"but no Ray cluster did within {wait:g} s; check the address (Ray's "
                           "GCS port, 6379 by default)") from None
    if probe.returncode != 0:
        said = (probe.stdout.strip() or probe.stderr.strip() or
                f"exit code {probe.returncode}").splitlines()[-1]
        raise RuntimeError(f"cannot reach the Ray cluster at {address}: {said[:300]}")


def _rel(path: Path) -> str:
    """A path in the home, as the home-relative text a job's spec and its mail carry."""
    return PurePosixPath(Path(path).relative_to(paths.home())).as_posix()


def _in_home(rel: str) -> Path:
    """A home-relative path from a job, refused unless it names a file under runs/ or
    models/ (nothing a node sends is written elsewhere)."""
    parts = PurePosixPath(rel).parts
    if not parts or parts[0] not in ("runs", "models") or ".." in parts or \
            PurePosixPath(rel).is_absolute() or len(parts) < 2:
        raise ValueError(f"a Ray job sent a file outside runs/ and models/: {rel!r}")
    return paths.home().joinpath(*parts)


# ---------------------------------------------------------------------------- the node's side


def node_home(node_id: str) -> Path:
    """This node's own home: DIMALIGN_RAY_SCRATCH (default: the temporary folder)/<node>."""
    base = os.environ.get("DIMALIGN_RAY_SCRATCH") or os.path.join(tempfile.gettempdir(),
                                                                   "dimalign-ray")
    return Path(base) / node_id[:16]


def remote_job(spec: dict, inputs: dict, mailbox) -> dict:
    """A Ray task: one job on whichever node Ray chose. Writes its inputs into the node's own
    home, runs `run_job` there with hooks that post to `mailbox`, and returns how it ended
    (after everything it posted has arrived). Never opens the store.

    The node's home keeps the cached models (and downloaded data) for every job on it; the
    job's own folder is `runs/<run id>` there (one job per run at a time), and the files of
    its parent (a fork's weights, an embedding's features) go into a folder of this job's
    alone, `parents/<run id>/`, so jobs that share a parent never share its folder."""
    import ray

    mailbox.post.remote(spec["id"], "begun")  # first: a scheduler that stops waits for it
    import torch

    node = ray.get_runtime_context().get_node_id()
    home = node_home(node)
    os.environ["DIMALIGN_HOME"] = str(home)  # the node's home, never the head's
    _link_data(home)
    torch.set_num_threads(max(1, round(spec["cpus"])))
    run_id = spec["id"]
    if ray.get(mailbox.cancelled.remote(spec["token"])):  # cancelled while waiting for a node
        return dict(status="cancelled", finished=time.time(), error="cancelled")
    # folders here -> their paths in the head's home
    places = {home / spec["folder"]: spec["folder"]}
    parent = None
    if spec["parent"] is not None:
        parent_id, parent_rel, status = spec["parent"]
        parent = RunRef(parent_id, home / "parents" / run_id, status)
        places[parent.folder] = parent_rel
    for folder in places:  # what an earlier attempt on this node left is not this job's
        shutil.rmtree(folder, ignore_errors=True)
    to_node = {rel: folder for folder, rel in places.items()}
    try:  # from the first file written here: an unforced cancel leaves no folder behind
        received = _receive(home, inputs, to_node)
        job = Job(run_id, spec["kind"], spec["method"], spec["preset"], spec["config"],
                  home / spec["folder"], parent, spec["already"], spec["points"])
        hooks = _mail_hooks(run_id, spec["token"], mailbox, home, places,
                            f" on Ray node {node[:8]} ({ray.util.get_node_ip_address()})")
        ending, interrupt = ending_of(lambda: run_job(job, hooks))
        if interrupt is not None:  # ray.cancel's KeyboardInterrupt: Ray records the cancel
            raise interrupt
        if ending["status"] == "done" and get_kind(spec["kind"]).trains_models:
            _send_models(job, home, received, mailbox)
    finally:
        for folder in places:
            shutil.rmtree(folder, ignore_errors=True)
    return ending


def _link_data(home: Path) -> None:
    """The node's datasets: DIMALIGN_RAY_DATA (set where `ray start` runs: a folder laid out as
    `$DIMALIGN_HOME/data`, e.g. with torchvision's files for an offline node) becomes the
    node home's `data/`; without it, datasets download into the node's home."""
    data = os.environ.get("DIMALIGN_RAY_DATA")
    if not data or (home / "data").exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # another job on this node linked it first
        (home / "data").symlink_to(Path(data).expanduser().resolve(), target_is_directory=True)


def _head_path(path: Path, home: Path, places: dict[Path, str]) -> str:
    """The head's home-relative path of a file a job wrote here."""
    for folder, rel in places.items():
        if path.is_relative_to(folder):
            return (PurePosixPath(rel) / PurePosixPath(path.relative_to(folder))).as_posix()
    return PurePosixPath(path.relative_to(home)).as_posix()


def _receive(home: Path, inputs: dict, to_node: dict[str, Path]) -> set[str]:
    """Write the shipped files into the node's home (a cached model only when its bytes
    differ from the node's copy); returns their head-relative paths."""
    import ray

    for rel, ref in inputs.items():
        data = ray.get(ref)
        folder, name = rel.rpartition("/")[::2]
        path = to_node[folder] / name if folder in to_node else home / rel
        try:
            same = checked.load(path, bytes) == data
        except (FileNotFoundError, checked.DamagedFile):
            same = False
        if not same:
            checked.save(path, data)
    return set(inputs)


def _send_models(job: Job, home: Path, received: set[str], mailbox) -> None:
    """The baselines a job trained on this node, weights before metadata (a model counts as
    cached once its metadata is there), back to the head's cache."""
    import ray

    from dimalign.config import config_from_dict
    from dimalign.train import baseline_models, cache_key, cache_path

    cfg = config_from_dict(job.config)
    for c, role in baseline_models(cfg):
        weights = Path(cache_path(cache_key(c, role)))
        for path in (weights, weights.with_suffix(".json")):
            rel = PurePosixPath(path.relative_to(home)).as_posix()
            if rel not in received and path.exists():
                ray.get(mailbox.post.remote(job.id, "file", rel, checked.load(path, bytes),
                                            None))


def _mail_hooks(run_id: str, token: str, mailbox, home: Path, places: dict[Path, str],
                where: str) -> Hooks:
    """Hooks that post to the head's mailbox. Numbers go without waiting (they arrive in
    order); a file waits until it is there, so a checkpoint outlives this node."""
    import ray

    def post(kind: str, *payload) -> None:
        mailbox.post.remote(run_id, kind, *payload)

    def artifact(owner: str, name: str, path: Path) -> None:
        ray.get(mailbox.post.remote(run_id, "file", _head_path(Path(path), home, places),
                                    checked.load(path, bytes), (owner, name)))

    poll = {"at": 0.0, "stop": False}
    lock = threading.Lock()

    def cancelled() -> bool:
        with lock:
            if time.monotonic() - poll["at"] >= CANCEL_POLL_SECONDS:
                poll["at"] = time.monotonic()
                poll["stop"] = ray.get(mailbox.cancelled.remote(token))
            return poll["stop"]

    return Hooks(device=lambda name: post("device", name + where),
                 progress=lambda fraction, phase: post("progress", fraction, phase),
                 say=lambda text: post("say", text),
                 telemetry=lambda step, values: post("metrics", step, values),
                 artifact=artifact, cancelled=cancelled)

