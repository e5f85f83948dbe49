"""Dashboard page switches in headless Chromium once data is cached, against a bare app.

Page switches in a real browser once data is cached: click a page link, stop the clock when
the page's title and all its charts are drawn and its script has finished. Median per page,
against a baseline run in the same session: the same switch in a bare Streamlit app whose pages
hold a title and one small chart (the framework's own floor).

    .venv/bin/python -m bench page_switch [--rounds 5]

Needs Chromium, the browser tests' (tests/find_browser.py, run as a program, finds it or
installs one). Builds its data first in a throw-away DIMALIGN_HOME: baselines, a MUDA run and
its UMAP, by real workers (about a minute).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import ROOT, chromium, header, median, parser

PAGES = ["Experiment", "Unlearn (live)", "Tune", "Eigenspectra", "Principal angles", "Manifolds",
         "Audit", "Compare", "Learn"]
BARE_PAGE = """import plotly.graph_objects as go
import streamlit as st
st.title({title!r})
st.plotly_chart(go.Figure(go.Scatter(y=[1, 3, 2])), key="c")
"""
BARE_APP = """import streamlit as st
st.navigation([st.Page("pages/a.py", title="Alpha"), st.Page("pages/b.py", title="Beta")]).run()
"""


def prepare(home: str) -> None:
    """A finished baselines job, a MUDA run, its 600-point UMAP and its audit in the store."""
    os.environ["DIMALIGN_HOME"] = home
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".dimalign" / "numba-cache"))
    from dimalign.audit import AuditSettings
    from dimalign.jobs import submit, submit_audit, submit_embedding
    from dimalign.scheduler import Scheduler, Slot
    from dimalign.store import Store

    store = Store()
    scheduler = Scheduler(store, slots=[Slot(None)])

    def drain(ids):
        while not all(store.get(i).terminal for i in ids):
            scheduler.tick()
            time.sleep(0.1)
        bad = [store.get(i) for i in ids if store.get(i).status != "done"]
        if bad:
            raise SystemExit(f"preparing failed: {bad[0].error}")

    run = submit(store, preset="digits-class", method="muda", owner="bench")
    drain([run])
    drain([submit_embedding(store, run, 600, "bench")])
    drain([submit_audit(store, run, "bench", AuditSettings())])


def serve(app: Path, home: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
         "--server.port", str(port), "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"], cwd=app.parent,
        env={**os.environ, "DIMALIGN_HOME": home}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("streamlit did not start")


def settled(page, charts: int) -> bool:
    return (page.locator(".js-plotly-plot").count() >= charts
            and page.locator("[data-testid='stStatusWidget']").count() == 0)


def switch(page, name: str, charts: int) -> float:
    """Seconds from the click until title, charts and a finished script (2 quiet polls)."""
    start = time.perf_counter()
    page.get_by_role("link", name=name, exact=True).click()
    page.get_by_role("heading", name=name.split(" (")[0]).first.wait_for(timeout=60_000)
    quiet = 0
    while quiet < 2:
        quiet = quiet + 1 if settled(page, charts) else 0
        if quiet == 1:
            end = time.perf_counter()
        time.sleep(0.02)
    return end - start


def measure(url: str, names: list[str], rounds: int, query: str,
            browser_path: str) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/?{query}")
        page.get_by_role("heading").first.wait_for(timeout=60_000)
        charts = {}
        for name in names:  # warm pass: caches filled, each page's chart count learned
            page.get_by_role("link", name=name, exact=True).click()
            page.get_by_role("heading", name=name.split(" (")[0]).first.wait_for(timeout=240_000)
            page.wait_for_load_state("networkidle")
            time.sleep(2)
            charts[name] = page.locator(".js-plotly-plot").count()
        times = {name: [] for name in names}
        for _ in range(rounds):
            for name in names:
                times[name].append(switch(page, name, charts[name]))
        browser.close()
    return times


def main(argv: list[str] | None = None) -> int:
    args = parser(__name__, rounds=5).parse_args(argv)
    browser_path = chromium()
    header("page switches once cached", {"rounds": args.rounds, "browser": browser_path,
                                         "preset": "digits-class"})
    with tempfile.TemporaryDirectory() as tmp:
        home = f"{tmp}/home"
        prepare(home)
        bare = Path(tmp) / "bare"
        (bare / "pages").mkdir(parents=True)
        (bare / "app.py").write_text(BARE_APP)
        for name, title in (("a", "Alpha"), ("b", "Beta")):
            (bare / "pages" / f"{name}.py").write_text(BARE_PAGE.format(title=title))
        results = {}
        for label, app, names, query in (
                ("bare", bare / "app.py", ["Alpha", "Beta"], ""),
                ("dimalign", ROOT / "app.py", PAGES, "owner=bench&preset=digits-class")):
            proc, url = serve(app, home)
            try:
                results[label] = measure(url, names, args.rounds, query, browser_path)
            finally:
                proc.terminate()
                proc.wait(10)
        floor = median([t for v in results["bare"].values() for t in v])
        print(f"baseline, bare Streamlit page (title + one chart): median {floor:.3f} s")
        print(f"{'page':<20}{'median s':>10}{'/ bare':>8}{'max s':>8}")
        for name, values in results["dimalign"].items():
            print(f"{name:<20}{median(values):>10.3f}{median(values) / floor:>8.1f}"
                  f"{max(values):>8.3f}")
        print("target: every page switch < 1 s once data is cached")
        from dimalign.daemon import stop_scheduler

        stop_scheduler()
    return 0
