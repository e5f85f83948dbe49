"""Is a participant on the wire the same load as a page? The server's CPU for one run, each.

bench/workshop.py's `--watch` puts most of a room on the wire (bench/wire.py): participants
that speak Streamlit's protocol without drawing. This checks what that stands for. On a warm
`make app` (pinned to the first half of the CPUs, this bench and Chromium to the other), one
Chromium page and one wire participant take turns: each opens Unlearn as a new owner, presses
Run alone, and the server side's CPU seconds (Streamlit, the scheduler, its worker: the run
and its film job included) are summed from the click to `--window` seconds after it. The wire
participant fetches the files the page before it fetched after its click, as the workshop's do.
Also counted: the reruns each sent after the click (the page's on its websocket).

    .venv/bin/python -m bench wire_load [--runs 5] [--window 8]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import chromium, header, median, parser
from bench.wire import WireParticipant
from bench.workshop import (
    CLICK_AT_JS,
    PRESET,
    WATCH_JS,
    cpu_list,
    cpu_seconds,
    serve,
    sides,
    split_cpus,
    stop_background,
    stop_server,
    train_baselines,
    wait_idle,
    wait_quiet,
)


def by_page(browser, url: str, owner: str, window: float, proc, home: str) -> tuple:
    """One page presses Run: (server CPU s, click → done s, reruns sent, files fetched)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    sent: list[tuple[float, str]] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.append((time.time(),
                                                                             "ws"))))
    page.on("request", lambda r: sent.append((time.time(), r.url)))
    page.goto(f"{url}/unlearn?owner={owner}&preset={PRESET}")
    page.get_by_role("button", name="Run", exact=True).wait_for(timeout=120_000)
    wait_idle(page, 120_000)
    page.evaluate(WATCH_JS)
    time.sleep(1)
    cpu0, start = cpu_seconds(sides(proc, home)[0]), time.time()
    page.evaluate(CLICK_AT_JS, start * 1000)
    end = start + window
    while time.time() < end:
        page.evaluate("() => 0")  # Playwright hands over the page's events while it is asked
        time.sleep(0.25)
    cpu = cpu_seconds(sides(proc, home)[0]) - cpu0
    seen = page.evaluate("() => window.__workshop")
    after = [what for t, what in sent if t >= start]
    files = [what for what in after if what != "ws" and what.startswith(url)]
    context.close()
    done = (seen["done"] - seen["click"]) / 1000 if seen["done"] and seen["click"] else None
    return cpu, done, after.count("ws"), files


def by_wire(url: str, owner: str, window: float, proc, home: str, files: list[str]) -> tuple:
    """One participant on the wire presses Run: as `by_page`."""
    wire = WireParticipant(url, "unlearn", f"owner={owner}&preset={PRESET}", fetch=files)
    wire.start()
    if not wire.ready.wait(120):
        raise SystemExit(f"the wire participant never saw Run ({wire.trouble})")
    time.sleep(1)
    cpu0, start = cpu_seconds(sides(proc, home)[0]), time.time()
    sent0 = wire.sent
    wire.click_at(start)
    time.sleep(window)
    cpu = cpu_seconds(sides(proc, home)[0]) - cpu0
    wire.stop.set()
    if wire.trouble:
        raise SystemExit(f"the wire participant: {wire.trouble}")
    return cpu, (wire.done - wire.click) if wire.done else None, wire.sent - sent0, wire.fetched


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=5)
    options.add_argument("--window", type=float, default=8.0,
                         help="seconds after the click whose server CPU counts (default 8)")
    args = options.parse_args(argv)
    server_cpus, own_cpus = split_cpus()
    browser_path = chromium()
    header("wire_load: a page and a wire participant, the server's CPU for one run each",
           {"runs": args.runs, "window s": args.window, "preset": PRESET,
            "server cpus": server_cpus, "bench and browser cpus": own_cpus})
    tmp = tempfile.mkdtemp(prefix="dimalign-wire-load-")
    home = f"{tmp}/home"
    os.environ["DIMALIGN_HOME"] = home
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".dimalign" / "numba-cache"))
    env, proc = dict(os.environ), None
    cpu = {"page": [], "wire": []}
    try:
        train_baselines(env)
        stop_background(home)  # a scheduler `dimalign run` left would not be pinned
        proc, url = serve(env, Path(tmp) / "make-app.log", server_cpus)
        os.sched_setaffinity(0, cpu_list(own_cpus))
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            try:
                by_page(browser, url, "warm", args.window, proc, home)  # the pool, warm
                files: list[str] = []
                print(f"{'who':<6}{'server CPU s':>14}{'click→done s':>14}{'reruns':>8}  fetched")
                for i in range(2 * args.runs):
                    wait_quiet(home)
                    time.sleep(2)
                    if i % 2 == 0:
                        used, done, reruns, files = by_page(browser, url, f"page{i}",
                                                            args.window, proc, home)
                        fetched = f"{len(files)} files"
                    else:
                        used, done, reruns, got = by_wire(url, f"wire{i}", args.window, proc,
                                                          home, files)
                        fetched = f"{got / 2**20:.1f} MB"
                    who = "page" if i % 2 == 0 else "wire"
                    cpu[who].append(used)
                    print(f"{who:<6}{used:>14.2f}{done or float('nan'):>14.2f}{reruns:>8}  "
                          f"{fetched}", flush=True)
            finally:
                browser.close()
    finally:
        if proc is not None:
            stop_server(proc)
        stop_background(home)
        shutil.rmtree(tmp, ignore_errors=True)
    for who, values in cpu.items():
        print(f"{who}: server CPU per run median {median(values):.2f} s "
              f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} runs)")
    print(f"wire / page: {median(cpu['wire']) / median(cpu['page']):.2f}")
    return 0
