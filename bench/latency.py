"""A MUDA run through the warm background worker against a fresh `dimalign run` process.

Latency of a MUDA run on `digits-class` through the background path (a scheduler already
running, its worker warm) against a fresh `dimalign run` process, medians of several runs in one
session, interleaved so drift hits both alike.

    .venv/bin/python -m bench latency [--runs 5] [--preset digits-class] [--home DIR]

- baseline: `python -m dimalign run --preset P --method muda --fresh` in a new process, wall
  time from start to exit, baselines already cached in the same DIMALIGN_HOME;
- background: `dimalign.jobs.submit(...)` from this process to a running scheduler whose
  worker has done one warm-up run; submit -> claimed by the worker, -> first telemetry point
  in the store, -> status `done` (the store polled every 10 ms).
Each run sets muda.lambda_da to a new value, so nothing is reused from an earlier run.
A throw-away DIMALIGN_HOME is used unless --home is given; NUMBA_CACHE_DIR stays as in the
environment (else the default home's), so the scheduler does not compile UMAP's kernels in the
middle of the timings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import header, median, parser

POLL = 0.01  # seconds between looks at the store


def dimalign(*args: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dimalign", *args], capture_output=True,
                          text=True, check=False, **kwargs)
    if proc.returncode:
        raise SystemExit(f"dimalign {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return proc


def fresh_process(preset: str, lambda_da: float) -> float:
    start = time.perf_counter()
    dimalign("run", "--preset", preset, "--method", "muda", "--fresh", "--json",
             "--set", f"muda.lambda_da={lambda_da}")
    return time.perf_counter() - start


def background(store, preset: str, lambda_da: float, timeout: float) -> tuple[float, ...]:
    """(submit -> running, submit -> first telemetry point, submit -> done) in seconds."""
    from dimalign.jobs import submit

    start = time.perf_counter()
    run_id = submit(store, preset=preset, method="muda", overrides=[f"muda.lambda_da={lambda_da}"],
                    owner="bench")
    claimed = first = None
    while time.perf_counter() - start < timeout:
        run = store.get(run_id)
        now = time.perf_counter() - start
        if claimed is None and run.status != "queued":
            claimed = now
        if first is None and store.last_step(run_id) >= 0:
            first = now
        if run.status == "done":
            return claimed, first if first is not None else float("nan"), now
        if run.status in ("failed", "cancelled", "interrupted"):
            raise SystemExit(f"run {run_id} {run.status}: {run.error}")
        time.sleep(POLL)
    raise SystemExit(f"run {run_id} not done after {timeout:.0f} s (status {run.status})")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def stop(scheduler: subprocess.Popen) -> None:
    """SIGTERM: the scheduler tells its workers to leave, waits for them, and exits."""
    if scheduler.poll() is None:
        scheduler.terminate()
        try:
            scheduler.wait(timeout=60)
        except subprocess.TimeoutExpired:
            scheduler.kill()
            scheduler.wait()


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=5, preset="digits-class", home=True)
    options.add_argument("--timeout", type=float, default=600.0,
                         help="seconds to wait for one background run")
    args = options.parse_args(argv)

    default_home = Path(os.environ.get("DIMALIGN_HOME", "~/.dimalign")).expanduser()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(default_home / "numba-cache"))
    home = args.home or tempfile.mkdtemp(prefix="dimalign-latency-")
    os.environ["DIMALIGN_HOME"] = home  # this process (store, submit) and every child
    os.environ["PYTHONWARNINGS"] = "ignore"

    from dimalign.embed import is_warm
    from dimalign.store import Store

    header("background run latency", {"preset": args.preset, "method": "muda",
                                      "runs": args.runs, "home": home,
                                      "NUMBA_CACHE_DIR": os.environ["NUMBA_CACHE_DIR"],
                                      "workers": os.environ.get("DIMALIGN_WORKERS", "default"),
                                      "load average": load()})
    start = time.perf_counter()
    dimalign("run", "--preset", args.preset)  # original + retrained, cached in the home
    print(f"baselines trained once in the home: {time.perf_counter() - start:.1f} s")

    log = open(Path(home) / "bench-scheduler.log", "a")  # noqa: SIM115 - closed below
    scheduler = subprocess.Popen([sys.executable, "-m", "dimalign", "scheduler",
                                  "--idle-exit", "0"], stdout=log, stderr=log,
                                 stdin=subprocess.DEVNULL)
    store = Store()
    try:
        start = time.perf_counter()
        warm = background(store, args.preset, 1.0, args.timeout)
        print(f"warm-up submission (scheduler start, worker spawn + imports, the run): "
              f"{time.perf_counter() - start:.1f} s (done {warm[2]:.1f} s after submit)")
        if not is_warm():  # the scheduler compiles UMAP's kernels once: not during timings
            print("waiting for the scheduler's UMAP warm-up to finish ...")
            while not is_warm() and scheduler.poll() is None:
                time.sleep(1.0)

        fresh, claimed, first, done = [], [], [], []
        for i in range(args.runs):  # interleaved, each with a value of its own
            fresh.append(fresh_process(args.preset, 1.0 + 0.01 * (2 * i + 1)))
            c, f, d = background(store, args.preset, 1.0 + 0.01 * (2 * i + 2), args.timeout)
            claimed.append(c)
            first.append(f)
            done.append(d)
    finally:
        store.close()
        stop(scheduler)
        log.close()
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)

    base = median(fresh)
    print(f"fresh process (baseline, `dimalign run --method muda --fresh`): median {base:.2f} s")
    print(f"{'path':<36}{'median s':>10}{'/ fresh':>9}  runs (s)")
    rows = {"fresh process": fresh, "background: submit -> running": claimed,
            "background: submit -> first point": first, "background: submit -> done": done}
    for name, values in rows.items():
        print(f"{name:<36}{median(values):>10.2f}{median(values) / base:>9.2f}  "
              f"{[round(v, 2) for v in values]}")
    print(f"ratio (submit -> done) / fresh process: {median(done) / base:.2f} (target <= 0.5); "
          f"first point: {median(first):.2f} s (target <= 1 s); load average now {load()}")
    return 0
