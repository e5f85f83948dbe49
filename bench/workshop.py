"""A workshop in a real browser: N owners press Run on Unlearn (live) at once on `make app`.

N participants on one server press Run on *Unlearn (live)* at the same moment. Per owner,
seconds from the click until the page shows the run as done ("Run … done."), and throughout a
health probe of the server every 0.5 s. Baseline from the same
session: one owner alone pressing Run on the same warm server, before the N-owner round.

    .venv/bin/python -m bench workshop [--owners 6] [--timeout 180]

Starts the app exactly as the README does (`make app PORT=<free port>`) in a throw-away
DIMALIGN_HOME whose digits-class baselines were trained once before (`dimalign run`), so every
run finds warm baselines. Needs Chromium (tests/find_browser.py, run as a program, finds it or
installs one). Screenshots of pages that never reach "done" (and of the last owner) go to a
folder under /tmp, printed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.common import ROOT, chromium, header, median, parser

PRESET = "digits-class"
PYTHON = ROOT / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_baselines(env: dict) -> float:
    """The preset's baselines trained once in this home: every later run finds them warm."""
    start = time.perf_counter()
    done = subprocess.run([str(PYTHON if PYTHON.exists() else sys.executable), "-m", "dimalign",
                           "run", "--preset", PRESET], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"training the baselines failed:\n{done.stdout[-2000:]}"
                         f"{done.stderr[-2000:]}")
    return time.perf_counter() - start


def serve(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """`make app PORT=…` in its own process group (make runs streamlit as its child)."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(["make", "app", f"PORT={port}"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < end:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise SystemExit(f"`make app` did not serve:\n{log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to make's process group (make and streamlit), SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        end = time.monotonic() + wait
        try:
            os.killpg(proc.pid, sig)
            while time.monotonic() < end:
                proc.poll()  # reap make, else its pid (the group's id) stays a zombie
                os.killpg(proc.pid, 0)
                time.sleep(0.2)
        except ProcessLookupError:
            break
    proc.wait(5)


class Prober(threading.Thread):
    """GET /_stcore/health every 0.5 s (5 s timeout); latencies in seconds, None: no answer."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stop, self.samples = f"{url}/_stcore/health", threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                urllib.request.urlopen(self.url, timeout=5).read()
                self.samples.append(time.perf_counter() - start)
            except OSError:
                self.samples.append(None)
            self.stop.wait(max(0.0, 0.5 - (time.perf_counter() - start)))


def wait_idle(page, timeout=60_000) -> None:
    """Streamlit shows a running indicator while the script runs (as tests/test_e2e.py)."""
    page.wait_for_load_state("networkidle", timeout=timeout)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=timeout)


def open_page(browser, url: str, owner: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{url}/unlearn?owner={owner}&preset={PRESET}")
    page.get_by_role("button", name="Run", exact=True).wait_for(timeout=120_000)
    wait_idle(page, 120_000)
    return page


def race(pages: dict, timeout: float) -> tuple[dict, dict, dict]:
    """Click Run on every page in quick succession, then poll them round robin until each
    shows "done." or `timeout` passes. Returns click → done seconds (None: never), the wall
    time of each click, and what else each page showed (exception or error boxes)."""
    clicks, wall, seconds, trouble = {}, {}, {}, {}
    for owner, page in pages.items():
        wall[owner] = time.time()
        clicks[owner] = time.perf_counter()
        page.get_by_role("button", name="Run", exact=True).click()
    pending = dict(pages)
    end = time.perf_counter() + timeout
    while pending and time.perf_counter() < end:
        for owner, page in list(pending.items()):
            if page.get_by_text("done.").count():
                seconds[owner] = time.perf_counter() - clicks[owner]
                del pending[owner]
                continue
            shown = [page.locator(f"[data-testid='{box}']").all_inner_texts()
                     for box in ("stException", "stAlertContentError")]
            if any(shown) and owner not in trouble:
                firsts = dict.fromkeys(t.strip().splitlines()[0][:200] for box in shown
                                       for t in box if t.strip())  # the message, once
                trouble[owner] = " | ".join(firsts)
        time.sleep(0.05)
    for owner in pending:
        seconds[owner] = None
    return seconds, wall, trouble


def store_times(owners: list[str]) -> dict[str, tuple]:
    """Per owner from the run store: (run id, status, queued s, running s)."""
    from dimalign.store import Store

    store, out = Store(), {}
    for owner in owners:
        runs = sorted(store.runs(owner=owner), key=lambda r: r.created)
        if not runs:
            continue
        run = runs[-1]
        queued = (run.started - run.created) if run.started else None
        ran = (run.finished - run.started) if run.started and run.finished else None
        out[owner] = (run.id, run.status, queued, ran, run.created, run.error)
    return out


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def report(label: str, seconds: dict, wall: dict, trouble: dict, store: dict) -> None:
    print(f"\n{label}")
    print(f"{'owner':<8}{'click→done s':>14}{'click→queued s':>16}{'queued s':>10}"
          f"{'running s':>11}  run (status)")
    for owner, s in seconds.items():
        run_id, status, queued, ran, created, error = store.get(owner, ("—", "none", None, None,
                                                                        None, None))
        lag = created - wall[owner] if created else None
        print(f"{owner:<8}{fmt(s):>14}{fmt(lag):>16}{fmt(queued):>10}{fmt(ran):>11}  "
              f"{run_id} ({status})")
        if error:
            print(f"         run error: {error.strip()[:300]}")
        if owner in trouble:
            print(f"         page showed: {trouble[owner]}")
    finished = [s for s in seconds.values() if s is not None]
    if finished:
        print(f"median {median(finished):.2f} s, max {max(finished):.2f} s; "
              f"{len(finished)}/{len(seconds)} pages reached \"done\"")
    else:
        print(f"no page reached \"done\" (0/{len(seconds)})")


def leftovers(home: str) -> list[str]:
    """Processes still carrying this home in their environment (the scheduler, its workers)."""
    out = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"DIMALIGN_HOME={home}".encode() in env.read_bytes().split(b"\0"):
                out.append(env.parent.name)
        except OSError:
            continue
    return [p for p in out if int(p) != os.getpid()]


def stop_background(home: str) -> list[str]:
    """Stop the home's scheduler (its workers finish first), then anything left in the home."""
    from dimalign.daemon import scheduler_running, stop_scheduler

    stop_scheduler()
    end = time.monotonic() + 30
    while (scheduler_running() or leftovers(home)) and time.monotonic() < end:
        time.sleep(0.5)
    killed = leftovers(home)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    return killed


@contextlib.contextmanager
def app_in_browser(title: str, settings: dict, prepare):
    """What a click-to-answer bench needs: Chromium (else the bench stops, naming how to get
    it), its header, a throw-away DIMALIGN_HOME that `prepare(env)` fills (baselines), `make
    app` serving it on a free port, and a headless Chromium: yields (url, browser), and stops
    them all after."""
    browser_path = chromium()
    header(title, {**settings, "preset": PRESET, "browser": browser_path, "server": "make app"})
    tmp = tempfile.mkdtemp(prefix="dimalign-bench-")
    home = f"{tmp}/home"
    os.environ["DIMALIGN_HOME"] = home  # for the store reads and stop_scheduler() here
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".dimalign" / "numba-cache"))
    env, proc = dict(os.environ), None
    try:
        prepare(env)
        proc, url = serve(env, Path(tmp) / "make-app.log")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                yield url, browser
            finally:
                browser.close()
    finally:
        if proc is not None:
            stop_server(proc)
        stop_background(home)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__)
    options.add_argument("--owners", type=int, default=6)
    options.add_argument("--timeout", type=float, default=180.0, help="seconds per round")
    args = options.parse_args(argv)
    browser_path = chromium()
    header("workshop: owners press Run on Unlearn (live) at once",
           {"owners": args.owners, "preset": PRESET, "timeout": args.timeout,
            "browser": browser_path, "server": "make app"})
    tmp = tempfile.mkdtemp(prefix="dimalign-workshop-")
    shots = Path(tempfile.mkdtemp(prefix="workshop-shots-", dir="/tmp"))
    home = f"{tmp}/home"
    os.environ["DIMALIGN_HOME"] = home  # for the store reads and stop_scheduler() here
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".dimalign" / "numba-cache"))
    env = dict(os.environ)
    proc = prober = None
    try:
        print(f"baselines trained once in the fresh home: {train_baselines(env):.1f} s")
        proc, url = serve(env, Path(tmp) / "make-app.log")
        prober = Prober(url)
        prober.start()
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            # every participant's page is in front on their own machine: no background-tab
            # throttling of timers and rendering, which one browser applies to all but one
            browser = p.chromium.launch(executable_path=browser_path, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync",
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows"])
            try:
                solo = {"solo": open_page(browser, url, "solo")}
                base = race(solo, args.timeout)
                report("baseline: one owner alone", *base, store_times(["solo"]))
                if base[0]["solo"] is None:
                    solo["solo"].screenshot(path=shots / "solo.png", full_page=True)
                for page in solo.values():
                    page.context.close()
                owners = [f"ws{i}" for i in range(1, args.owners + 1)]
                pages = {owner: open_page(browser, url, owner) for owner in owners}
                round_start = len(prober.samples)
                seconds, wall, trouble = race(pages, args.timeout)
                round_probes = prober.samples[round_start:]
                for owner, page in pages.items():
                    if seconds[owner] is None or owner == owners[-1]:
                        page.screenshot(path=shots / f"{owner}.png", full_page=True)
                report(f"{args.owners} owners at once", seconds, wall, trouble,
                       store_times(owners))
            finally:
                browser.close()
        prober.stop.set()
        prober.join(10)
        for label, samples in (("whole session", prober.samples),
                               (f"{args.owners}-owner round", round_probes)):
            answered = [s for s in samples if s is not None]
            print(f"health probes, {label}: {len(samples)}, max "
                  f"{fmt(max(answered) if answered else None)} s, over 1 s: "
                  f"{sum(s > 1 for s in answered)}, no answer within 5 s: "
                  f"{len(samples) - len(answered)}")
        done = [s for s in seconds.values() if s is not None]
        last = max(done) if done else None
        print(f"\nbaseline (one owner alone) {fmt(base[0]['solo'])} s; last of {args.owners} "
              f"owners {fmt(last)} s"
              + (f" ({last / base[0]['solo']:.1f}x)" if last and base[0]["solo"] else ""))
        print("targets: last owner <= 15 s with 6 owners on 2 cores; every page reaches "
              "\"done\"; health answers within 1 s throughout")
        print(f"screenshots: {shots}")
    finally:
        if prober is not None:
            prober.stop.set()
        if proc is not None:
            stop_server(proc)
        killed = stop_background(home)
        if killed:
            print(f"killed leftover processes of the home: {', '.join(killed)}")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
