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

import time

from bench.common import median, parser
from bench.wire import WireParticipant
from bench.workshop import (
    CLICK_AT_JS,
    PRESET,
    WATCH_JS,
    Served,
    cpu_seconds,
    served_app,
    sides,
    split_cpus,
    train_baselines,
    wait_idle,
    wait_quiet,
)


def by_page(app: Served, owner: str, window: float) -> tuple:
    """One page presses Run: (server CPU s, click → done s, reruns sent, files fetched)."""
    url, proc, home = app.url, app.proc, app.home
    context = app.browser.new_context(viewport={"width": 1400, "height": 1000})
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


def by_wire(app: Served, owner: str, window: float, files: list[str]) -> tuple:
    """One participant on the wire presses Run: as `by_page`."""
    url, proc, home = app.url, app.proc, app.home
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
    cpu: dict[str, list[float]] = {"page": [], "wire": []}
    with served_app("wire_load: a page and a wire participant, the server's CPU for one run "
                    "each", {"runs": args.runs, "window s": args.window}, train_baselines,
                    server_cpus=server_cpus, browser_cpus=own_cpus) as app:
        by_page(app, "warm", args.window)  # the pool, warm
        files: list[str] = []
        print(f"{'who':<6}{'server CPU s':>14}{'click→done s':>14}{'reruns':>8}  fetched")
        for i in range(2 * args.runs):
            wait_quiet(app.home)
            time.sleep(2)
            if i % 2 == 0:
                used, done, reruns, files = by_page(app, f"page{i}", args.window)
                fetched = f"{len(files)} files"
            else:
                used, done, reruns, got = by_wire(app, f"wire{i}", args.window, files)
                fetched = f"{got / 2**20:.1f} MB"
            who = "page" if i % 2 == 0 else "wire"
            cpu[who].append(used)
            print(f"{who:<6}{used:>14.2f}{done or float('nan'):>14.2f}{reruns:>8}  "
                  f"{fetched}", flush=True)
    for who, values in cpu.items():
        print(f"{who}: server CPU per run median {median(values):.2f} s "
              f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} runs)")
    print(f"wire / page: {median(cpu['wire']) / median(cpu['page']):.2f}")
    return 0
