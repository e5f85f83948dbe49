"""A workshop in a real browser: N owners press Run on Unlearn (live) at once on `make app`.

N participants on one server press Run on *Unlearn (live)* at the same moment. Per owner,
seconds from the click until the page shows the run as done ("Run … done."), and throughout a
health probe of the server every 0.5 s. Baseline from the same
session: one owner alone pressing Run on the same warm server, before the N-owner round.

    .venv/bin/python -m bench workshop [--owners 6,12,20] [--watch 4] [--timeout 180]

With `--watch K`, K participants of each round are Chromium pages (on screen) and the rest
speak Streamlit's protocol without drawing (bench/wire.py: on the wire): the server has the
whole room, while the browsers' CPUs draw K pages, as K laptops would, not twenty on one core.

Starts the app exactly as the README does (`make app PORT=<free port>`) in a throw-away
DIMALIGN_HOME whose digits-class baselines were trained once before (`dimalign run`), so every
run finds warm baselines. Needs Chromium (tests/find_browser.py, run as a program, finds it or
installs one). Screenshots of pages that never reach "done" (and of the last owner) go to a
folder under /tmp, printed at the end.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, chromium, header, median, parser
from bench.wire import WireParticipant

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


def serve(env: dict, log: Path, cpus: str | None = None) -> tuple[subprocess.Popen, str]:
    """`make app PORT=…` in its own process group (make runs streamlit as its child), on the
    CPUs `cpus` (a taskset list) when given: the scheduler and its workers inherit them."""
    port = free_port()
    pin = ["taskset", "-c", cpus] if cpus else []
    with open(log, "w") as out:
        proc = subprocess.Popen([*pin, "make", "app", f"PORT={port}"], cwd=ROOT, env=env,
                                stdout=out,
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


# Timed inside each page, so the bench's own round trips to 20 pages (through one Playwright
# driver, on the browsers' CPUs) are no part of the figure: the click on Run and the first
# sight of "Run … done." are stamped by the page's clock (this machine's, as the store's).
WATCH_JS = """() => {
  const ws = window.__workshop = {click: null, done: null, trouble: null};
  document.addEventListener("click", (e) => {
    const button = e.target.closest("button");
    if (ws.click === null && button && button.innerText.trim() === "Run") ws.click = Date.now();
  }, true);
  const look = () => {
    if (ws.click === null || ws.done !== null) return;
    for (const box of document.querySelectorAll("[data-testid='stAlertContentSuccess']"))
      if (/^Run \\w+ done\\./.test(box.innerText.trim())) { ws.done = Date.now(); return; }
    if (ws.trouble === null) {
      const bad = document.querySelector(
        "[data-testid='stException'], [data-testid='stAlertContentError']");
      if (bad) ws.trouble = bad.innerText.trim().split("\\n")[0].slice(0, 200);
    }
  };
  new MutationObserver(look).observe(document.body, {childList: true, subtree: true,
                                                     characterData: true});
  setInterval(look, 50);
}"""


CLICK_AT_JS = """(at) => setTimeout(() => {
  for (const button of document.querySelectorAll("button"))
    if (button.innerText.trim() === "Run") { button.click(); return; }
}, at - Date.now())"""


def race(pages: dict, wires: dict, timeout: float, spread_s: float = 0.0,
         seed: int = 0) -> tuple[dict, dict, dict]:
    """Every participant clicks Run within `spread_s` seconds (each at a moment drawn
    uniformly, seeded), then wait until each shows "done." (a page on screen, a wire
    participant on the wire) or `timeout` passes. Returns click → done seconds (None: never),
    the wall time of each click, and what else each was shown (an exception or an error)."""
    for page in pages.values():
        page.evaluate(WATCH_JS)
    # every page clicks on its own timer: Playwright's clicks, one page after another,
    # spread 20 presses over many seconds on a busy browser CPU
    at = time.time() * 1000 + 1000 + 100 * len(pages)
    draw = random.Random(seed)
    moments = {owner: at + 1000 * spread_s * draw.random() for owner in [*pages, *wires]}
    for owner, page in pages.items():
        page.evaluate(CLICK_AT_JS, moments[owner])
    for owner, wire in wires.items():
        wire.click_at(moments[owner] / 1000)
    seen: dict[str, dict] = {}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        seen = {owner: page.evaluate("() => window.__workshop") for owner, page in pages.items()}
        seen |= {owner: {"click": w.click and w.click * 1000, "done": w.done and w.done * 1000,
                         "trouble": w.trouble} for owner, w in wires.items()}
        if all(s["done"] is not None for s in seen.values()):
            break
        time.sleep(1.0)
    seconds = {o: (s["done"] - s["click"]) / 1000 if s["done"] and s["click"] else None
               for o, s in seen.items()}
    wall = {o: (s["click"] or 0) / 1000 for o, s in seen.items()}
    trouble = {o: s["trouble"] for o, s in seen.items() if s["trouble"]}
    return seconds, wall, trouble


def open_wires(url: str, owners: list[str], fetch: list[str], timeout: float = 120) -> dict:
    """Participants on the wire (bench/wire.py), each on Unlearn with its first run drawn,
    each to fetch `fetch` after its answer (what the solo page fetched to draw its own)."""
    wires = {owner: WireParticipant(url, "unlearn", f"owner={owner}&preset={PRESET}",
                                    fetch=fetch) for owner in owners}
    for wire in wires.values():
        wire.start()
    end = time.monotonic() + timeout
    for owner, wire in wires.items():
        if not wire.ready.wait(max(0.0, end - time.monotonic())):
            raise SystemExit(f"{owner} on the wire never saw its page's Run button "
                             f"({wire.trouble or 'no answer'})")
    return wires


def settled(page, asked: list, quiet: float = 3.0, timeout: float = 30.0) -> None:
    """Until `page` has asked for nothing new for `quiet` seconds (`asked`: its requests, which
    Playwright hands over while the page is evaluated)."""
    end, seen, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < end and time.monotonic() - since < quiet:
        page.evaluate("() => 0")
        if len(asked) != seen:
            seen, since = len(asked), time.monotonic()
        time.sleep(0.25)


def watched(owners: list[str], count: int) -> list[str]:
    """`count` owners spread evenly through the round's list: those seen in Chromium."""
    if count >= len(owners):
        return list(owners)
    return [owners[round(i * len(owners) / count)] for i in range(count)]


def store_times(owners: list[str]) -> dict[str, tuple]:
    """Per owner from the run store: (run id, status, queued s, running s)."""
    from dimalign.store import Store

    store, out = Store(), {}
    for owner in owners:
        runs = sorted((r for r in store.runs(owner=owner) if r.kind == "unlearn"),
                      key=lambda r: r.created)
        if not runs:
            continue
        run = runs[-1]
        queued = (run.started - run.created) if run.started else None
        ran = (run.finished - run.started) if run.started and run.finished else None
        out[owner] = (run.id, run.status, queued, ran, run.created, run.error)
    return out


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def report(label: str, seconds: dict, wall: dict, trouble: dict, store: dict,
           wires: set = frozenset()) -> None:
    print(f"\n{label}")
    print(f"{'owner':<10}{'seen':<8}{'click→done s':>14}{'click→queued s':>16}{'queued s':>10}"
          f"{'running s':>11}  run (status)")
    for owner, s in seconds.items():
        run_id, status, queued, ran, created, error = store.get(owner, ("—", "none", None, None,
                                                                        None, None))
        lag = created - wall[owner] if created else None
        seen = "wire" if owner in wires else "screen"
        print(f"{owner:<10}{seen:<8}{fmt(s):>14}{fmt(lag):>16}{fmt(queued):>10}{fmt(ran):>11}  "
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


@dataclass
class Served:
    """`make app` serving a throw-away home, and a headless Chromium beside it."""

    url: str
    browser: object
    proc: subprocess.Popen  # make's: its process group is the server's
    home: str


@contextlib.contextmanager
def served_app(title: str, settings: dict, prepare, *, server_cpus: str | None = None,
               browser_cpus: str | None = None, browser_args: tuple[str, ...] = ()):
    """What a click-to-answer bench needs: Chromium (else the bench stops, naming how to get
    it), its header, a throw-away DIMALIGN_HOME that `prepare(env)` fills (baselines), `make
    app` serving it on a free port (pinned to `server_cpus`, a taskset list, when given: its
    scheduler and workers inherit them; this process, Playwright and Chromium then go to
    `browser_cpus`), and a headless Chromium: yields a `Served`, and stops them all after."""
    browser_path = chromium()
    pins = {"server cpus": server_cpus, "browser cpus": browser_cpus} if server_cpus else {}
    header(title, {**settings, "preset": PRESET, **pins, "browser": browser_path,
                   "server": "make app"})
    tmp = tempfile.mkdtemp(prefix="dimalign-bench-")
    home = f"{tmp}/home"
    os.environ["DIMALIGN_HOME"] = home  # for the store reads and stop_scheduler() here
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".dimalign" / "numba-cache"))
    env, proc = dict(os.environ), None
    try:
        prepare(env)
        if server_cpus:
            stop_background(home)  # a scheduler `prepare` left would not be pinned
        proc, url = serve(env, Path(tmp) / "make-app.log", server_cpus)
        if browser_cpus:  # Playwright's driver and Chromium inherit this process's CPUs
            os.sched_setaffinity(0, cpu_list(browser_cpus))
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                *browser_args])
            try:
                yield Served(url, browser, proc, home)
            finally:
                browser.close()
    finally:
        if proc is not None:
            stop_server(proc)
        if killed := stop_background(home):
            print(f"killed leftover processes of the home: {', '.join(killed)}")
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def app_in_browser(title: str, settings: dict, prepare):
    """`served_app`, unpinned, as (url, browser)."""
    with served_app(title, settings, prepare) as app:
        yield app.url, app.browser


def split_cpus() -> tuple[str, str]:
    """This machine's CPUs in two halves as taskset lists: (the server's, the browsers')."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("pinning needs two CPUs or more; run with --no-pin")
    half = len(cpus) // 2
    return ",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:]))


def cpu_list(text: str) -> set[int]:
    """A taskset list ("0", "0,2", "1-3") as a set of CPUs."""
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        out |= set(range(int(low), int(high or low) + 1))
    return out


def cpu_seconds(pids: list[str]) -> float:
    """User + system CPU seconds the processes have used so far (those still alive)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def descendants(root: int) -> list[str]:
    """Every process below `root` (the browsers: Playwright's driver and Chromium's tree)."""
    children: dict[str, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = stat.read_text().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        children.setdefault(ppid, []).append(stat.parent.name)
    out, todo = [], [str(root)]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def allowed(pid: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    return "?"


def command(pid: str) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return "?"


def sides(proc: subprocess.Popen, home: str) -> tuple[list[str], list[str]]:
    """(the server side, the browsers): `make app`'s tree and every other process carrying
    the home (the scheduler and its workers, which start in a session of their own); and the
    rest of this bench's tree (Playwright's driver and Chromium, which inherit the home from
    this process's environment too)."""
    tree = {str(proc.pid), *descendants(proc.pid)}
    browsers = ({str(os.getpid())} | set(descendants(os.getpid()))) - tree  # this process:
    # the participants on the wire
    browsers |= {pid for pid in leftovers(home) if command(pid).startswith("chrome_")}  # its
    # crash reporter daemonizes: no longer below this bench
    server = tree | (set(leftovers(home)) - browsers)
    return sorted(server, key=int), sorted(browsers, key=int)


class CpuTimeline(threading.Thread):
    """Each second, the CPU the server side and the browsers used (in cores), from the
    moment it starts: where a round's seconds went. A process's CPU counts from its first
    sighting (a worker that started between two looks brings its whole history)."""

    def __init__(self, proc: subprocess.Popen, home: str):
        super().__init__(daemon=True)
        self.proc, self.home, self.stop = proc, home, threading.Event()
        self.samples: list[tuple[float, float, float]] = []  # (s since start, server, browsers)
        self.last: dict[str, float] = {}

    def used(self, pids: list[str]) -> float:
        total = 0.0
        for pid in pids:
            now = cpu_seconds([pid])
            total += max(0.0, now - self.last.get(pid, 0.0))
            self.last[pid] = now
        return total

    def run(self) -> None:
        start = prev = time.perf_counter()
        self.used([p for side in sides(self.proc, self.home) for p in side])  # the history
        while not self.stop.wait(1.0):
            server, browsers = sides(self.proc, self.home)
            now = time.perf_counter()
            span = now - prev
            self.samples.append((now - start, self.used(server) / span,
                                 self.used(browsers) / span))
            prev = now

    def busiest(self) -> str:
        """Each side's mean over the round, in cores, and how long each was over 0.9."""
        if not self.samples:
            return "—"
        server = [x[1] for x in self.samples]
        browsers = [x[2] for x in self.samples]
        return (f"{sum(server) / len(server):.2f} / {sum(browsers) / len(browsers):.2f} "
                f"(over 0.9: {sum(x > 0.9 for x in server)} s / "
                f"{sum(x > 0.9 for x in browsers)} s of {len(server)} s)")

    def windows(self, width: float = 5.0) -> str:
        """The timeline in `width`-second windows: "0-5 s 0.98/1.00" (server/browsers)."""
        out, bins = [], {}
        for t, server, browsers in self.samples:
            bins.setdefault(int((t - 1e-9) // width), []).append((server, browsers))
        for b, values in sorted(bins.items()):
            server = sum(v[0] for v in values) / len(values)
            browsers = sum(v[1] for v in values) / len(values)
            out.append(f"{b * width:.0f}-{(b + 1) * width:.0f} s {server:.2f}/{browsers:.2f}")
        return ", ".join(out)


def wait_quiet(home: str, timeout: float = 120) -> None:
    """Until no job of the home is queued or running (a run's film job included)."""
    from dimalign.store import Store

    store, end = Store(), time.monotonic() + timeout
    try:
        while store.runs(statuses=("queued", "running")) and time.monotonic() < end:
            time.sleep(0.5)
    finally:
        store.close()


def spread(values: list[float]) -> str:
    return f"{median(values):.2f} / {max(values):.2f}" if values else "—"


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__)
    options.add_argument("--owners", default="6", help="participants per round, a comma list "
                         "run in order on one server, e.g. 6,12,20 (default 6)")
    options.add_argument("--timeout", type=float, default=180.0, help="seconds per round")
    options.add_argument("--server-cpus", help="taskset list for `make app`, its scheduler and "
                         "workers (default: the first half of this machine's CPUs)")
    options.add_argument("--browser-cpus", help="taskset list for the simulated participants' "
                         "Chromium and this bench (default: the other half)")
    options.add_argument("--no-pin", action="store_true",
                         help="browsers and server share every CPU (the issue's first figures)")
    options.add_argument("--spread", type=float, default=1.0, help="the participants press "
                         "Run within this many seconds, each at a moment drawn uniformly "
                         "(default 1, the issue's room; 0: all at one moment)")
    options.add_argument("--watch", type=int, help="participants per round seen in Chromium, "
                         "spread through the round; the rest speak Streamlit's protocol "
                         "without drawing (bench/wire.py), so the server has the whole room "
                         "while the browsers' CPUs draw only these (default: all in Chromium)")
    args = options.parse_args(argv)
    counts = [int(n) for n in args.owners.split(",")]
    server_cpus = browser_cpus = None
    if not args.no_pin:
        default_server, default_browser = split_cpus()
        server_cpus = args.server_cpus or default_server
        browser_cpus = args.browser_cpus or default_browser
        if cpu_list(server_cpus) & cpu_list(browser_cpus):
            raise SystemExit("--server-cpus and --browser-cpus overlap")
    shots = Path(tempfile.mkdtemp(prefix="workshop-shots-", dir="/tmp"))
    settings = {"owners": args.owners, "timeout": args.timeout,
                "in Chromium per round": "all" if args.watch is None else args.watch,
                "clicks within s": args.spread}

    def prepare(env: dict) -> None:
        print(f"baselines trained once in the fresh home: {train_baselines(env):.1f} s")

    rows = []
    # every participant's page is in front on their own machine: no background-tab
    # throttling of timers and rendering, which one browser applies to all but one
    with served_app("workshop: participants press Run on Unlearn (live) at once", settings,
                    prepare, server_cpus=server_cpus, browser_cpus=browser_cpus,
                    browser_args=("--disable-component-update", "--no-first-run",
                                  "--disable-sync", "--disable-background-timer-throttling",
                                  "--disable-renderer-backgrounding",
                                  "--disable-backgrounding-occluded-windows")) as app:
        url, browser, proc, home = app.url, app.browser, app.proc, app.home
        prober = Prober(url)
        prober.start()
        try:
            solo = {"solo": open_page(browser, url, "solo")}
            asked: list[tuple[float, str]] = []  # what a page fetches to draw its answer
            solo["solo"].on("request", lambda r: asked.append((time.time(), r.url)))
            base = race(solo, {}, args.timeout)
            report("baseline: one participant alone", *base, store_times(["solo"]))
            wait_quiet(home)  # its film job: the page draws the film when it lands
            settled(solo["solo"], asked)
            if not base[0]["solo"]:
                raise SystemExit("the solo page never showed its run done: no baseline, "
                                 "and no files to give the participants on the wire")
            fetch = [u for t, u in asked if t >= base[1]["solo"] and u.startswith(url)]
            print(f"the solo page fetched {len(fetch)} files to draw its answer: each "
                  "participant on the wire fetches them after its own")
            for page in solo.values():
                page.context.close()
            server, browsers = sides(proc, home)
            for label, pids in (("the server side", server), ("the browsers", browsers)):
                where: dict[str, list[str]] = {}
                for pid in pids:
                    where.setdefault(allowed(pid), []).append(command(pid))
                print(f"pinning, {label}: " + "; ".join(
                    f"CPUs {cpus}: {', '.join(sorted(set(names)))} ({len(names)})"
                    for cpus, names in sorted(where.items())))
            for round_no, n in enumerate(counts, 1):
                rows.append(one_round(app, round_no, n, args, fetch, prober, shots))
        finally:
            prober.stop.set()
            prober.join(10)
    summary(rows, base[0]["solo"])
    print(f"screenshots: {shots}")
    return 0


def one_round(app: Served, round_no: int, n: int, args, fetch: list[str], prober: Prober,
              shots: Path) -> tuple:
    """`n` participants press Run (`args.watch` of them in Chromium, the rest on the wire):
    their report printed, and the round's row for `summary`."""
    wait_quiet(app.home)  # names of this round alone: a name is its owner's
    owners = [f"r{round_no}n{n}p{i}" for i in range(1, n + 1)]
    eyes = watched(owners, n if args.watch is None else args.watch)
    pages = {owner: open_page(app.browser, app.url, owner) for owner in eyes}
    wires = open_wires(app.url, [o for o in owners if o not in pages], fetch)
    timeline = CpuTimeline(app.proc, app.home)
    timeline.start()
    probes0 = len(prober.samples)
    seconds, wall, trouble = race(pages, wires, args.timeout, args.spread, seed=round_no)
    timeline.stop.set()
    timeline.join(10)
    probes = prober.samples[probes0:]
    wait_quiet(app.home)  # the runs' film jobs
    for owner, page in pages.items():
        if seconds[owner] is None or owner == eyes[-1]:
            page.screenshot(path=shots / f"{owner}.png", full_page=True)
    for wire in wires.values():
        wire.stop.set()
    stored = store_times(owners)
    report(f"{n} participants at once ({len(pages)} in Chromium, {len(wires)} on the wire)",
           seconds, wall, trouble, stored, set(wires))
    print("CPU in cores, server side / browsers, from the round's start: "
          + timeline.windows())
    for page in pages.values():
        page.context.close()
    return n, seconds, wall, stored, probes, timeline, set(wires)


def summary(rows: list, solo: float | None) -> None:
    """One line per round: on-screen, on-the-wire and server-side times (median / max), health,
    CPU."""
    print(f"\nbaseline: one participant alone {fmt(solo)} s click → done on screen")
    print("| participants | every participant: click → done (median / max s) | on screen | "
          "on the wire | store: click → done | queued | running | after the store: screen ; "
          "wire | health max s (> 1 s) | CPU: server / participants (cores, mean) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, seconds, wall, stored, probes, timeline, wires in rows:
        screen = [s for o, s in seconds.items() if s is not None and o not in wires]
        wire = [s for o, s in seconds.items() if s is not None and o in wires]
        shown = len(screen) + len(wire)
        finished, lag = {}, {"screen": [], "wire": []}
        for owner, s in seconds.items():
            run = stored.get(owner)
            if run and run[1] == "done" and run[2] is not None and run[3] is not None:
                finished[owner] = run[4] - wall[owner] + run[2] + run[3]
                if s is not None:
                    lag["wire" if owner in wires else "screen"].append(s - finished[owner])
        queued = [r[2] for r in stored.values() if r[2] is not None]
        running = [r[3] for r in stored.values() if r[3] is not None]
        answered = [x for x in probes if x is not None]
        lost = len(probes) - len(answered)
        health = (f"{max(answered):.2f} ({sum(x > 1 for x in answered)} > 1 s"
                  + (f", {lost} unanswered" if lost else "") + ")") if answered else "—"
        print(f"| {n} ({shown}/{n} done; {n - len(wires)} in Chromium) | "
              f"{spread(screen + wire)} | {spread(screen)} | "
              f"{spread(wire)} | {spread(list(finished.values()))} | {spread(queued)} | "
              f"{spread(running)} | {spread(lag['screen'])} ; {spread(lag['wire'])} | "
              f"{health} | {timeline.busiest()} |")
    print("targets at 20 participants: every page within 15 s, median within 8 s, health "
          "within 1 s throughout")
