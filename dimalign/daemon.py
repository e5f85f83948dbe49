"""The background scheduler: one per $DIMALIGN_HOME, holding an exclusive lock file.

`ensure_scheduler` starts it in the background when none is running, so `dimalign submit` and
the app just submit; `watch`, `cancel`, `resume` and every page of the app also start one, so
a scheduler that died (killed, or the machine restarted) is replaced by the next command or
page. A new scheduler marks the runs of workers that died with the old one `interrupted`. Jobs
run in this machine's worker processes (the local backend, the default) or, with
`--backend ray` / DIMALIGN_BACKEND=ray, as tasks on a Ray cluster (`dimalign.ray_backend`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time

from dimalign import paths
from dimalign.errors import ConfigError
from dimalign.scheduler import Scheduler, recycle_limits, worker_count, worker_threads
from dimalign.store import Store

BACKENDS = ("local", "ray")


def backend(name: str | None = None) -> str:
    """Where jobs run: `name` (the scheduler's --backend), else DIMALIGN_BACKEND, else local
    (this machine's worker processes); `ray`: tasks on a Ray cluster (`dimalign.ray_backend`)."""
    source = "--backend" if name is not None else "DIMALIGN_BACKEND"
    value = (name if name is not None else os.environ.get("DIMALIGN_BACKEND") or "local")
    if value.strip().lower() not in BACKENDS:
        raise ConfigError(source, f"must be one of {', '.join(BACKENDS)}, got {value!r}")
    return value.strip().lower()


def check_worker_settings(backend_name: str | None = None) -> None:
    """Raise ConfigError for a scheduler setting a background scheduler could not start with
    (DIMALIGN_WORKERS below 1 or not a number, ...): said here, in the foreground. With
    `backend_name`, also when a scheduler of another backend already serves this home (its
    runs would not go where they were asked to)."""
    worker_count()
    recycle_limits()
    worker_threads(1)
    use = backend(backend_name)
    if use == "ray":
        from dimalign.ray_backend import job_resources

        job_resources()
    serving = running_backend()
    if backend_name is not None and serving not in (None, use):
        raise ConfigError("--backend", f"a {serving} scheduler serves this DIMALIGN_HOME; stop "
                          f"it first (dimalign scheduler --stop) or use --backend {serving}")


def running_backend() -> str | None:
    """The backend of the scheduler serving this home, None when none is."""
    if not scheduler_running():
        return None
    try:
        said = _backend_path().read_text().strip()
    except OSError:
        return "local"  # a scheduler from before it was written down
    return said if said in BACKENDS else "local"


def _backend_path():
    return paths.home() / "scheduler.backend"


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
            _backend_path().write_text(use)
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


def ensure_scheduler(backend_name: str | None = None,
                     address: str | None = None) -> subprocess.Popen | None:
    """Start a background scheduler for this home unless one is running; returns the process
    it started, if any. Cheap enough to call often (a lock-file check): a scheduler stops after
    ten idle minutes, or may have been killed. One this process started that is still
    importing (it takes the lock a few seconds after its start) is not started twice.
    A scheduler setting it could not start with raises ConfigError here. `backend_name`,
    `address`: the scheduler's --backend and --address (default: DIMALIGN_BACKEND's)."""
    check_worker_settings(backend_name)
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
                [sys.executable, "-m", "dimalign", "scheduler",
                 *(["--backend", backend_name] if backend_name else []),
                 *(["--address", address] if address else [])], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
        _starting[home] = (process, time.monotonic())
        return process
